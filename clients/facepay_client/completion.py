"""Static bash and zsh completion scripts for `facepay`, generated from its argparse parser.

Each command path (`payment`, `payment watch`, ...) completes to its subcommands, its options
and the choices of its positional arguments; an option that takes a value with fixed choices
(--limit-pay no_credit) completes to them. zsh runs the same function through bashcompinit.
"""

from __future__ import annotations

import argparse
import shlex

__all__ = ["SHELLS", "script"]

SHELLS = ("bash", "zsh")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for shell ("bash" or "zsh")."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}; one of {', '.join(SHELLS)}")
    prog = parser.prog
    paths: dict[str, list[str]] = {}
    values: dict[str, list[str]] = {}
    _walk(parser, "", paths, values)
    function = "_" + prog.replace("-", "_")
    lines = [
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local path="" next word i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        next="${path:+$path }$word"',
        '        case "$next" in',
    ]
    nested = [p for p in paths if p]
    if nested:
        lines.append(f'            {"|".join(_quote(p) for p in nested)}) path="$next" ;;')
    lines += [
        "        esac",
        "    done",
        "    local words",
        '    case "$path $prev" in',
    ]
    for key, choices in sorted(values.items()):
        lines.append(f"        {_quote(key)}) words={_quote(' '.join(choices))} ;;")
    lines.append('        *) case "$path" in')
    for path, words in paths.items():
        lines.append(f"            {_quote(path)}) words={_quote(' '.join(words))} ;;")
    lines += [
        "           esac ;;",
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        f"complete -F {function} {prog}",
    ]
    body = "\n".join(lines) + "\n"
    if shell == "zsh":
        return f"#compdef {prog}\nautoload -U +X bashcompinit && bashcompinit\n{body}"
    return f'# bash completion for {prog}: eval "$({prog} completion bash)"\n{body}'


def _walk(
    parser: argparse.ArgumentParser,
    path: str,
    paths: dict[str, list[str]],
    values: dict[str, list[str]],
) -> None:
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.append(name)
                _walk(sub, f"{path} {name}".strip(), paths, values)
            continue
        if action.option_strings:
            words.extend(action.option_strings)
            if action.choices is not None and action.nargs != 0:
                for option in action.option_strings:
                    values[f"{path} {option}"] = [str(c) for c in action.choices if str(c)]
        elif action.choices is not None:
            words.extend(str(c) for c in action.choices if str(c))
    paths[path] = words


def _quote(word: str) -> str:
    return shlex.quote(word)

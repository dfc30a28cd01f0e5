"""What text the v2 XML wire can carry: one rule for the API's validation and the XML builder."""

from __future__ import annotations

import re

# Characters XML 1.0 cannot carry at all (C0 controls but TAB, LF and CR; lone surrogates;
# U+FFFE and U+FFFF); a document holding one is refused by the peer, so none is ever sent.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
NOT_XML_RULE = "must not contain characters XML 1.0 cannot carry (such as U+FFFE or U+FFFF)"

"""WeChat Pay's backend: the v2 XML API (authinfo, micropay, orderquery, reverse) and v3 JSON."""

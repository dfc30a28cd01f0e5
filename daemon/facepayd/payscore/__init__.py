"""PayScore (v3) service orders: the domain service over the journal and the v3 client."""

"""`jarvis`: the operator's command line. It talks to a running server through the admin API,
and to the registry file and this machine directly where no server runs."""

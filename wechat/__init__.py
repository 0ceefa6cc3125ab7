"""Everything that speaks WeChat's HTTP API: the client, the errcode table, the sandbox."""

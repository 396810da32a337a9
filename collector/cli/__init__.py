"""The `collector` command (cli.main), its HTTP client, progress display and embedded Redis; nothing imports it."""

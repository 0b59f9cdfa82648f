"""Real applications, one per framework, that the adapter tests serve over a socket."""

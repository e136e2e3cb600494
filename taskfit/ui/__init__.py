"""`taskfit ui`: a server-rendered web app over the run store, for reading traces and reviewing answers."""

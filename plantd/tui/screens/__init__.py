"""The console's views, one module each; they render and post messages, they do no I/O."""

"""Complete example services built on trio_micro."""

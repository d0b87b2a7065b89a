"""What is decided about a notification before it is claimed, one policy step per concern."""

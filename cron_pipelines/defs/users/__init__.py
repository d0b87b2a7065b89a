"""Users: warned after a stretch of inactivity, deactivated after a longer one (docs/services.md, "The business rules")."""

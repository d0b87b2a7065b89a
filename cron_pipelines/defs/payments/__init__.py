"""Dues: reminders before they are due, overdue marks and notices after (docs/services.md, "The business rules")."""

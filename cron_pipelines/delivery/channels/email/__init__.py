"""Email: templates in the reader's language, the MIME written directly, and SMTP or an outbox folder."""

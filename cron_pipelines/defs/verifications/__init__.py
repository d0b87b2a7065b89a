"""Employee verifications: decided from their attempts, reminded while open (docs/services.md, "The business rules")."""

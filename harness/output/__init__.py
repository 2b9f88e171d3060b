"""What the user sees: terminal tables (report), summary.md (summary), charts (plots) and
the side-by-side source view (show)."""

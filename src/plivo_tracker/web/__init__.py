"""HTTP plumbing shared by all routes: errors, ops endpoints, limits."""

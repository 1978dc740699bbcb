"""End-to-end tests: real servers, browsers and command-line front ends (marked e2e)."""

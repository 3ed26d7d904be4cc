"""The realtime gateway's logic, importable and testable without the Functions runtime."""

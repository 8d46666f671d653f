"""What every tagstream service shares below its own code: errors, settings, logging."""

"""REST: payment look-ups for members and admins, merchant balances."""

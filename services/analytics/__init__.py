"""Analytics: projections of every event into live GMV, top products and payment health."""

"""Shopper behaviour: events in, co-engagement and personal recommendations, demand per tag."""

from community_testing import clock, community, events, feed, market, service

__all__ = ["clock", "community", "events", "feed", "market", "service"]

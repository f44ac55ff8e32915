from community_testing import clock, community, database_url, events, feed, market, service

__all__ = ["clock", "community", "database_url", "events", "feed", "market", "service"]

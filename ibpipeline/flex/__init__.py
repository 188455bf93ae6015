"""IBKR Flex Web Service: client, rate limiting, errors (parsing lives in ``parse``/``schema``)."""

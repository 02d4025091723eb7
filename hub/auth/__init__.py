"""OAuth tokens for the hub: the encrypted store (`store`, `crypto`), the loopback login (`login`),
`crmhub auth` (`cli`), and a loopback authorization server to try it against (`sandbox`).

Connectors never import this package: they call `hub.sdk.oauth.oauth_auth` with the
`context.token_store` the hub lends them (a `hub.auth.store.DbTokenStore`). Nothing is imported
here, so `crmhub` starts without loading the crypto and OAuth libraries.
"""

"""Webhooks in: verify the vendor's signature, store the raw event durably in
`hub.webhook_inbox`, acknowledge only then; workers claim and process inbox rows.

- `signatures`: Stripe, HubSpot v3 and Twilio verifiers (`verify(headers, raw_body, url, now)`)
- `schemes`: connector kind -> verifier and body parser
- `inbox`: insert (deduplicated), claim (SKIP LOCKED), mark done / failed / dead, stats
- `commit`: group commit of concurrent requests
- `server`: the starlette app (`create_app`); `cli.serve` runs it under uvicorn
"""

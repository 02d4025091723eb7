"""Wave migrations from a legacy source: plan, dry run, run, verify, roll back, delta, cut over.

A wave is a named, persisted selection on a root stream of a source connector (a `where` on the
root object, or a file of root ids); the records of the source's other streams follow the root
record they reference (`references:` in the source's mapping), so every wave is self-consistent.
Runs write through the hub's page writer (identity, ownership rules, provenance, change log), one
transaction per page, and record every record in the id crosswalk `hub.migration_items`.
See docs/migrations.md.
"""

"""A project's database layer: where it is (engine), what it holds (schema and migrations),
how an annotation becomes a row (records), and the three views of a project's rows that
`labeling.store.Store` hands out: the annotation store (annotations), the webhook inbox
(webhook_inbox) and the training requests (training_requests)."""

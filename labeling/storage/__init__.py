"""The annotation store's database layer: where it is (engine), what it holds (schema and
migrations), how an annotation becomes a row (records) and the webhook inbox (inbox).
`labeling.store.AnnotationStore` is the one class the rest of the code uses."""

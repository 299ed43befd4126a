"""Corpus-scale predict, link and select on Ray Data (`skillloop predict --ray-address`,
`skillloop link --ray-address`, `skillloop select --pool`; docs/ray.md).

`sources` plans the input (JSONL and Parquet files, a glob or a folder) as blocks and reads
one block at a time, malformed rows set aside as rejects; `outputs` writes one block's
Parquet and import JSON atomically and assembles the folder; `actors` holds the callable
classes Ray Data runs, one tagger per actor (`link`'s, one linker per actor, in `link`);
`engine` connects to Ray and runs the blocks; `predict` is the driver of predict and link;
`selection` keeps each block's best candidates and ranks their union."""

"""The shared engine cache: engines keyed by their cell's fingerprint, in any fsspec store.

A fingerprint covers every input that decides an engine's bytes (model digest, build
options, targets, library version; the GPU's CC for `current` cells), so an engine built
anywhere for a fingerprint serves every cell with that fingerprint. Layout under the URL:

    v1/engines/<sha256>.engine                the engine bytes, named by their sha256
    v1/records/<fingerprint>/<sha256>.json    one record per engine built for that key

An entry is a record plus the engine it names. Writers put the engine first and the record
last, each as one atomic object (an object store's PUT, or a temporary name renamed into
place in a folder), so a record only ever names an engine already whole. Two machines that
push the same key at once write either the same engine (the same name, the same bytes) or
two engines under two records: nothing is overwritten with something else. Readers trust
nothing they read: an engine is used only after its sha256, size and engine header match
the record and the cell (`matrix.engine_cache.transfer`), and only then renamed into the
output folder.

Modules: `config` (which cache, pure), `record` (the JSON record), `store` (the fsspec
layout), `transfer` (download, verify, place; upload), `session` (what `build` and
`cache pull/push` do), `report` (`cache status`), `gc` (folder caches).
"""

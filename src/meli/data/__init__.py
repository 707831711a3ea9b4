"""Titles in: reaching sources, reading formats, normalizing and encoding text, the synthetic
sample, pulling from the DVC remote.

Reading a source (the ingest stage ties these together):
- `sources`: a local file or directory, or a URL downloaded; its files, SHA-256 and size;
- `formats`: which compression (gzip, bz2, xz) and which format (JSON lines, CSV, tar) a file is;
- `blocks`: whole lines from a decompressing stream, a few MB at a time, read ahead in a thread
  (also `meli predict`'s input);
- `jsonl`, `challenge_csv`, `course_tar`: the readers of JSON lines, the challenge's train.csv
  and the course tarball;
- `merge`: a block's rows, the plain lines parsed by Arrow and the others row by row, judged
  alike and put back in line order (what the JSON lines and CSV readers share);
- `sink`: the canonical table (Parquet, written in a background thread) and rejected.jsonl.

Then:
- `text`: title normalization, the one function training, evaluation and prediction all use;
- `vocabulary`: token <-> id, and the encoding of normalized titles into fixed-length id rows;
- `sample`: the synthetic MercadoLibre-like dataset, generated offline (the default source);
- `remote`: `meli pull`, a `dvc pull` that changes the workspace only when every object arrived
  intact.
"""

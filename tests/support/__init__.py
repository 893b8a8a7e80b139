"""The tests' helpers, as plain modules (pytest puts tests/ and the repository on sys.path: pytest.ini's
`pythonpath`), and the fixtures built on them, a pytest plugin that conftest.py loads:

- `data`: where the data set is, the trainer's data flags, slices of it, the trainer run in this process;
- `processes`: the trainer (and other commands) as processes, their environment, free ports, their results;
- `emulator`: a Cloud Storage emulator (gcp-storage-emulator), in this process or as a process of its own;
- `images`: test images as files (PNG, JPEG, product photos, a decompression bomb's header);
- `model`: the small exported model the serving tests share;
- `launch`: the launcher checks' tools (the lint venv, kubectl's renderings, stand-in CLIs, absl's verdicts);
- `gcloud_sdk`: the Google Cloud SDK's aiplatform client, when installed;
- `fixtures`: the pytest fixtures (`fashion`, `prepared_data`, `gcs`, ...).
"""

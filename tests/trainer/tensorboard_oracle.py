#!/usr/bin/env python3
"""TensorBoard's side of test_tensorboard: what the PyPI `tensorboard` package
reads from a run folder written with logging.tensorboard: true.

  tensorboard_oracle.py RUN_DIR OUT_JSON

Two reads, both with the package's own code:
  - each events.out.tfevents.* file, record by record: every length and data
    checksum checked with tensorboard's masked CRC-32C, every record parsed
    as tensorboard's Event message, nothing left over at the end (the
    package's loader stops quietly at a bad record, so it cannot tell);
  - the folder as TensorBoard's EventAccumulator sees it (every file in name
    order, a run restarting at a step dropping what earlier files hold from
    that step on): each scalar series, each text (decoded as the text plugin
    decodes its tensors, and rendered to HTML by the text plugin) and the
    tags the text plugin claims.
OUT_JSON holds what both saw, for the C++ test to compare with metrics.jsonl
and the config.
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.plugins.text import text_plugin
from tensorboard.util import tensor_util


def read_records(path):
    """The Event messages of one file; raises on any framing or checksum error."""
    with open(path, "rb") as f:
        data = f.read()
    events = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise ValueError(f"{path}: {len(data) - pos} bytes left after the last record")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if header_crc != pywrap_tensorflow.masked_crc32c(header):
            raise ValueError(f"{path}: bad length checksum at byte {pos}")
        body = data[pos + 12 : pos + 12 + length]
        if len(body) != length or len(data) < pos + 16 + length:
            raise ValueError(f"{path}: record at byte {pos} is truncated")
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        if body_crc != pywrap_tensorflow.masked_crc32c(body):
            raise ValueError(f"{path}: bad data checksum at byte {pos}")
        event = event_pb2.Event()
        event.ParseFromString(body)
        events.append(event)
        pos += 16 + length
    return events


def is_start(event):
    """Whether the event marks a run starting (TensorBoard drops later steps of earlier files)."""
    return event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START


def main():
    run_dir, out_json = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents."))
    files = []
    for name in names:
        events = read_records(os.path.join(run_dir, name))
        files.append(
            {
                "name": name,
                "records": len(events),
                "file_version": events[0].file_version if events else "",
                "run_starts": [e.step for e in events if is_start(e)],
            }
        )

    accumulator = event_accumulator.EventAccumulator(
        run_dir,
        size_guidance={
            event_accumulator.SCALARS: 0,  # 0: keep every event
            event_accumulator.TENSORS: 0,
        },
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {
        tag: [[s.step, s.value] for s in accumulator.Scalars(tag)] for tag in tags["scalars"]
    }
    texts = {}
    for tag in tags["tensors"]:
        entries = []
        for t in accumulator.Tensors(tag):
            array = tensor_util.make_ndarray(t.tensor_proto)
            html = text_plugin.text_array_to_html(array, enable_markdown=True)
            entries.append([t.step, array.item().decode("utf-8"), html])
        texts[tag] = entries
    result = {
        "files": files,
        "scalars": scalars,
        "texts": texts,
        "text_plugin_tags": sorted(accumulator.PluginTagToContent("text").keys()),
    }
    with open(out_json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

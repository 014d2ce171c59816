"""Tables of benchmarks/deployment.py: medians, ratios, Markdown."""

import statistics

import bench_utils

FILE_NAMES = {
    "litert": ".tflite",
    "onnx_tensorflow": "ONNX (tf)",
    "onnx_torch": "ONNX (torch)",
    "openvino": "OpenVINO",
    "tf_saved_model": "SavedModel",
    "torch_pt2": ".pt2",
}


def summarise(runs, runtimes, batch_sizes, precisions, baseline):
    """Per runtime, precision and batch: median ms/image and ratios."""
    rows = {}
    for runtime in runtimes:
        rounds = runs[runtime]
        for size in batch_sizes:
            pooled = {}
            for precision in precisions:
                pooled[precision] = [
                    t
                    for r in rounds
                    for t in r["times"][str(size)].get(precision, [])
                ]
            pairs = [
                i8 / f32
                for r in rounds
                for f32, i8 in zip(
                    r["times"][str(size)].get("float32", []),
                    r["times"][str(size)].get("int8", []),
                )
            ]
            for precision, values in pooled.items():
                if not values:
                    continue
                rows[(runtime, precision, size)] = {
                    "ms_per_image": 1e3 * statistics.median(values) / size,
                    "int8_over_float32": (
                        statistics.median(pairs)
                        if precision == "int8" and pairs
                        else None
                    ),
                    "top1": rounds[0]["top1"][precision],
                }
    for (_, _, size), row in rows.items():
        base = rows.get((baseline, "float32", size))
        row["over_keras_jax_float32"] = (
            row["ms_per_image"] / base["ms_per_image"] if base else None
        )
    return rows


def markdown(result, rows, batch_sizes, modes, precisions, labels):
    acc = result["accuracy"]
    base = acc["modes"]["float32"]
    lines = [
        f"Model: {acc['parameters']:,} parameters, {acc['image_shape']} "
        f"inputs, {acc['num_test']} held-out digits. CPU: "
        f"{result['cpu']['model_name']} ({', '.join(result['cpu']['flags'])}"
        f"), {result['environment']['cpus']} cores shared with other jobs "
        f"(load average {result['load_before'][0]:.1f} before, "
        f"{result['load_after'][0]:.1f} after): compare ratios, not times "
        "across runs. Median of every timed call over "
        f"{result['settings']['rounds']} interleaved rounds; int8 / float32 "
        "is the median of call-by-call ratios in the same process.",
        "",
    ]
    header = [
        "precision",
        "top-1",
        "vs float32 (points)",
        "same top-1 as float32",
        "preset weights",
    ]
    exported = sorted({k.split("/")[0] for k in result["export"]})
    header += [f"{FILE_NAMES.get(name, name)} file" for name in exported]
    body = []
    for mode in modes:
        m = acc["modes"][mode]
        row = [
            mode,
            f"{100 * m['top1']:.1f}%",
            f"{100 * (m['top1'] - base['top1']):+.1f}",
            f"{100 * m['same_top1_as_float32']:.1f}%",
            size_cell(m["weights_file_bytes"], base["weights_file_bytes"]),
        ]
        for name in exported:
            entry = result["export"].get(f"{name}/{mode}", {})
            base_entry = result["export"].get(f"{name}/float32", {})
            row.append(
                size_cell(entry["bytes"], base_entry.get("bytes"))
                if "bytes" in entry
                else "n/a"
            )
        body.append(row)
    lines += [bench_utils.table(header, body), ""]
    header = ["runtime", "precision"]
    for size in batch_sizes:
        header += [
            f"batch {size}: ms/image",
            "int8 / float32",
            "/ Keras jax float32",
        ]
    header.append("top-1 here")
    body = []
    for runtime in [
        r for r in result["runtimes"] if (r, "float32", batch_sizes[0]) in rows
    ]:
        for precision in precisions:
            if (runtime, precision, batch_sizes[0]) not in rows:
                continue
            row = [labels[runtime], precision]
            for size in batch_sizes:
                cell = rows[(runtime, precision, size)]
                ratio = cell["int8_over_float32"]
                base = cell["over_keras_jax_float32"]
                row += [
                    f"{cell['ms_per_image']:.3f}",
                    f"**{ratio:.2f}**" if ratio else "-",
                    f"{base:.2f}" if base else "-",
                ]
            top1 = rows[(runtime, precision, batch_sizes[0])]["top1"]
            row.append(f"{100 * top1:.1f}%")
            body.append(row)
    lines.append(bench_utils.table(header, body))
    return "\n".join(lines) + "\n"


def size_cell(size, base):
    text = f"{size / 1024:.0f} KB"
    if base and size != base:
        text += f" ({size / base:.2f}x)"
    return text

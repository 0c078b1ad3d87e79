"""The main job (`lucent-inhibit demo`): bad input fails cleanly; a quick run writes a report page that
loads in real headless Chromium with every image and link resolving."""
import os
import subprocess
import sys
from urllib.parse import unquote, urlparse

import pytest

from lucent_inhibit.app.cli import main
from lucent_inhibit.models.defaults import default_attribution_layer


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--images", "/nonexistent/folder"], "does not exist"),
        (["--model", "no_such_model"], "Unknown model spec"),
        (["--layer", "blocks_4_0_bn3_drp"], "blocks_4_0_bn3_drop"),  # close match listed
        (["--unit", "100000"], "out of range"),
    ],
)
def test_demo_bad_input_one_line_and_nothing_written(extra, expected, tmp_path, capsys):
    out = tmp_path / "report"
    code, err = _run(["demo", "--quick", "--out", str(out)] + extra, capsys)
    assert code == 2
    lines = err.splitlines()
    assert lines[-1].startswith("lucent-inhibit: error:") and expected in lines[-1]
    assert all(": error:" not in l for l in lines[:-1])  # one error line; before it only what was picked
    assert all(l.startswith(("lucent-inhibit: feature layer:", "lucent-inhibit: attribution layer:")) for l in lines[:-1])
    assert not out.exists() and os.listdir(tmp_path) == []


def test_demo_folder_without_readable_images(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="broken.jpg"):
        code, err = _run(["demo", "--quick", "--images", str(folder), "--out", str(out)], capsys)
    assert code == 2 and "no readable image" in err
    assert not out.exists()


def test_default_attribution_layer_is_the_activation_before_the_feature(lite0, tiny_net):
    assert default_attribution_layer(lite0, "blocks_4_0_bn3_drop") == "blocks_4_0_bn2_act"
    assert default_attribution_layer(tiny_net, "conv3") == "relu2"
    with pytest.raises(ValueError, match="conv1"):
        default_attribution_layer(tiny_net, "conv1")


@pytest.mark.slow
@pytest.mark.browser
def test_quick_demo_report_loads_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "lucent_inhibit", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = out / "index.html"
    assert index.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".partial")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--allow-file-access-from-files"],
        )
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])")
        links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        browser.close()
    assert not errors, errors
    assert len(images) >= 7 and all(ok for _, ok in images), [s for s, ok in images if not ok]
    files = [unquote(urlparse(l).path) for l in links if l.startswith("file:")]
    assert files and all(os.path.exists(f) for f in files), [f for f in files if not os.path.exists(f)]
    assert any(f.endswith("atlas.html") for f in files)


def test_default_attribution_layer_on_resnet_is_the_block_output_before_a_reused_relu():
    from lucent_inhibit.models.loading import load_model

    net = load_model("torchvision:resnet18", weights="none")
    assert default_attribution_layer(net, "layer3_1_conv2") == "layer3_0"  # not the stem relu far back
    assert default_attribution_layer(net, "layer3_1_bn1") == "layer3_0"

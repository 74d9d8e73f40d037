"""Outside models: Hub ids through the HF cache, chat templates for models without one, continued
pretraining, end-of-turn EOS in saved generation configs, and the user's data left as the user's."""

from __future__ import annotations

import pytest
from lmforge.errors import MissingArtifact
from lmforge.hub import resolve_model_ref, split_revision


def test_local_dir_wins_over_hub_id(tmp_path, monkeypatch, fake_hub):
    fake_hub.add_model("org/tiny", {"config.json": "{}"})
    local = tmp_path / "org" / "tiny"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model_ref("org/tiny")
    assert resolved.path == local.relative_to(tmp_path) and resolved.commit is None


def test_hub_id_resolves_to_cached_snapshot_with_commit(fake_hub):
    main = fake_hub.add_model("org/tiny", {"config.json": "{}"})
    v1 = fake_hub.add_model("org/tiny", {"config.json": '{"v": 1}'}, revision="v1")
    resolved = resolve_model_ref("org/tiny")
    assert resolved.commit == main and resolved.path.name == main and (resolved.path / "config.json").is_file()
    assert resolved.repo_id == "org/tiny"
    assert resolve_model_ref("org/tiny@v1").commit == v1
    assert resolve_model_ref("org/tiny", revision="v1").commit == v1
    assert resolve_model_ref(f"org/tiny@{main}").commit == main
    assert split_revision("org/tiny@v1") == ("org/tiny", "v1") and split_revision("a/b") == ("a/b", None)


def test_missing_model_is_one_line_naming_ref_and_what_was_tried(fake_hub, tmp_path):
    with pytest.raises(MissingArtifact) as err:
        resolve_model_ref("org/absent")
    message = str(err.value)
    assert "org/absent" in message and "not a directory and not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message
    with pytest.raises(MissingArtifact, match="not a directory"):
        resolve_model_ref(str(tmp_path / "no" / "such" / "dir"))
    fake_hub.add_model("org/tiny", {"config.json": "{}"})
    with pytest.raises(MissingArtifact, match="revision 'v9'"):
        resolve_model_ref("org/tiny@v9")

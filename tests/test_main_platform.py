"""Starting on a Linux desktop that lacks a library of Qt's xcb plugin: one sentence naming it, before Qt starts."""
from __future__ import annotations

import main as app_main


def loader(absent: set[str], plugin_error: str | None = None):
    loaded = []

    def load(name: str):
        if name in absent:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        if plugin_error and name.endswith("libqxcb.so"):
            raise OSError(plugin_error)
        loaded.append(name)
        return object()

    return load, loaded


def test_a_missing_xcb_library_is_named_with_its_package(tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    load, _ = loader({"libxcb-cursor.so.0"})
    missing = app_main.missing_xcb_libraries(plugin, load)
    assert missing == ["libxcb-cursor.so.0"]
    sentence = app_main.xcb_sentence(missing)
    assert "libxcb-cursor.so.0 is missing" in sentence and "sudo apt-get install libxcb-cursor0" in sentence
    assert sentence.count(". ") == 0 and sentence.endswith(".")


def test_a_library_outside_the_known_list_is_named_from_the_plugins_loader_error(tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    load, loaded = loader(set(), "libxcb-new.so.2: cannot open shared object file: No such file or directory")
    assert app_main.missing_xcb_libraries(plugin, load) == ["libxcb-new.so.2"]
    assert set(app_main.XCB_LIBRARIES) <= set(loaded)


def test_main_stops_with_the_sentence_before_creating_qt(monkeypatch, capsys):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    monkeypatch.setattr(app_main.sys, "platform", "linux")
    monkeypatch.setattr(app_main, "missing_xcb_libraries", lambda: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert app_main.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "libxcb-icccm.so.4 and libxcb-keysyms.so.1 are missing" in err
    assert "libxcb-icccm4 libxcb-keysyms1" in err


def test_only_an_xcb_start_is_checked():
    assert app_main.uses_xcb({}, "linux") and app_main.uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert not app_main.uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not app_main.uses_xcb({"XDG_SESSION_TYPE": "wayland"}, "linux")
    assert not app_main.uses_xcb({}, "darwin")

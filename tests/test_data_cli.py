"""`mgvideo data check` reports good and bad rows exactly; `mgvideo data synth` calls the generator."""

import json

from videos import write_bit_flipped, write_broken, write_gop_mp4, write_truncated, write_video

from mgvideo.cli import main


def test_check_reports_every_good_and_bad_row(tmp_path, capsys):
    good = write_video(tmp_path / "good.mp4")
    write_video(tmp_path / "other.webm", codec="libvpx-vp9")
    broken = write_broken(tmp_path, good)
    rows = ["good.mp4 0", "other.webm 1", f"{broken['missing'].name} 0", "no-label-here",
            f"{broken['truncated'].name} 1", f"{broken['garbage'].name} 0", f"{broken['empty'].name} 1"]
    (tmp_path / "list.txt").write_text("\n".join(rows) + "\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 2
    assert [b["line"] for b in report["bad"]] == [3, 4, 5, 6, 7]
    paths = [b["path"] for b in report["bad"]]
    assert paths[0] == str(broken["missing"]) and paths[1] == str(tmp_path / "list.txt")
    assert "not found" in report["bad"][0]["reason"] and "list.txt:4" in report["bad"][1]["reason"]
    assert "empty" in report["bad"][4]["reason"]


def test_check_exits_zero_when_all_rows_read(tmp_path, capsys):
    write_video(tmp_path / "a.mp4")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.mp4'} 0\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--root", "/elsewhere", "--full"]) == 0
    assert "1 readable, 0 bad" in capsys.readouterr().out


def test_default_check_finds_truncation_and_full_finds_mid_stream_damage(tmp_path, capsys):
    good = write_gop_mp4(tmp_path / "good.mp4", frames=40, keyint=10)
    write_truncated(good, tmp_path / "cut.mp4", frame=15)
    write_bit_flipped(good, tmp_path / "flipped.mp4", frame=15)  # in the second of four keyframe groups
    (tmp_path / "list.txt").write_text("good.mp4 0\ncut.mp4 1\nflipped.mp4 0\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 2 and [b["line"] for b in report["bad"]] == [2]
    reason = f"{tmp_path / 'cut.mp4'}: truncated: container says 40 frames, 15 decode"
    assert report["bad"][0]["reason"] == reason
    assert main(["data", "check", str(tmp_path / "list.txt"), "--full"]) == 2
    out, err = capsys.readouterr()
    assert "1 readable, 2 bad" in out
    assert "list.txt:2: " in err and "container says 40 frames, 15 decode" in err
    assert "list.txt:3: " in err and "flipped.mp4: decode error: [Errno" in err and "Invalid data" in err


def test_check_ssv2_and_charades_formats(tmp_path, capsys):
    write_video(tmp_path / "11.mp4")
    (tmp_path / "labels.json").write_text(json.dumps({"Holding something": "0"}))
    (tmp_path / "val.json").write_text(json.dumps([{"id": "11", "template": "Holding [something]"},
                                                   {"id": "12", "template": "Holding [something]"}]))
    args = ["data", "check", str(tmp_path / "val.json"), "--format", "ssv2", "--labels",
            str(tmp_path / "labels.json"), "--ext", ".mp4", "--json"]
    assert main(args) == 2
    assert json.loads(capsys.readouterr().out)["bad"][0]["line"] == 2
    (tmp_path / "c.csv").write_text('original_vido_id video_id frame_id path labels\nA 0 0 11.mp4 "0"\n')
    assert main(["data", "check", str(tmp_path / "c.csv"), "--format", "charades"]) == 0
    assert main(["data", "check", str(tmp_path / "val.json"), "--format", "ssv2"]) == 2  # needs --labels


def test_synth_calls_the_generator(tmp_path, monkeypatch, capsys):
    from mgvideo.data import synthetic

    calls = []
    fake = lambda out_dir, seed=0, size="default": calls.append((out_dir, seed, size)) or {"n": 3}  # noqa: E731
    monkeypatch.setattr(synthetic, "generate", fake)
    assert main(["data", "synth", "--out", str(tmp_path), "--seed", "4", "--size", "small"]) == 0
    assert calls == [(str(tmp_path), 4, "small")]
    assert json.loads(capsys.readouterr().out) == {"n": 3}


def test_check_lines_name_the_file_once_and_exit_2(tmp_path, capsys):
    write_video(tmp_path / "a.mp4")
    (tmp_path / "badrows.csv").write_text("a.mp4 ball\na.mp4 bal\n")
    (tmp_path / "classes.txt").write_text("ball\n")
    classes = str(tmp_path / "classes.txt")
    assert main(["data", "check", str(tmp_path / "badrows.csv"), "--classes", classes]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{tmp_path / 'badrows.csv'}:2: unknown label 'bal' (not in the class list)"]


def test_check_without_classes_warns_that_names_go_unchecked(tmp_path, capsys):
    write_video(tmp_path / "a.mp4")
    (tmp_path / "list.csv").write_text("a.mp4 ball\na.mp4 bal\n")
    assert main(["data", "check", str(tmp_path / "list.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 2 and "no --classes" in report["warning"]
    assert "2 distinct names" in report["warning"]
    assert main(["data", "check", str(tmp_path / "list.csv")]) == 0
    assert "warning:" in capsys.readouterr().err


def test_a_header_row_is_not_a_video(tmp_path, capsys):
    write_video(tmp_path / "a.mp4")
    (tmp_path / "list.csv").write_text("path,label\na.mp4,0\n")
    assert main(["data", "check", str(tmp_path / "list.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": 1, "bad": []}

"""``trio-micro serve --compress ENCODING``: the server's default encoding for its answers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
from msgspec.msgpack import Ext

from trio_micro.cli import main
from trio_micro.cli._main import build_parser
from trio_micro.cli._serve import _check_args
from trio_micro.protocol import Connection, Response, Role, Settings

from .test_serve import SLOW, WAIT, running


def config(*argv: str) -> str | None:
    return _check_args(build_parser().parse_args(["serve", SLOW, *argv])).compression


def test_compress_sets_the_servers_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_MICRO_COMPRESS", raising=False)
    assert (config(), config("--compress", "zlib"), config("--compress", "none")) == (
        None,
        "zlib",
        "none",
    )


def test_the_environment_gives_the_default_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_MICRO_COMPRESS", "zlib")
    assert (config(), config("--compress", "none")) == ("zlib", "none")


def test_an_unknown_encoding_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", SLOW, "--compress", "brotli"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("trio-micro serve: error: argument --compress: expected one of none")
    assert last.endswith("got 'brotli'")


async def test_a_served_answer_is_compressed(tmp_path: Path) -> None:
    argv = ["serve", "tests.cli._slow_service:OpenedService", "-o", "size=4000"]
    async with running([*argv, "--compress", "zlib"], tmp_path, prefix="serving ") as server:
        host, _, port = server.line.rpartition(" ")[2].rpartition(":")
        conn = Connection(Role.CLIENT, settings=Settings(compression=("zlib",)))
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(conn.initiate())
            request = msgspec.msgpack.encode({"seconds": 0})
            sent = False
            answer = None
            while answer is None:
                for event in conn.receive_data(await stream.receive_some(65536)):
                    if isinstance(event, Response):
                        answer = event
                if conn.handshake_complete and not sent:
                    await stream.send_all(conn.send_request(1, "opened/sleep", request))
                    sent = True
            await stream.aclose()
    assert isinstance(answer.payload, Ext)  # 4 KB of "x": compressed
    assert msgspec.msgpack.decode(conn.decompress(answer.payload))["greeting"] == "x" * 4000

"""Wake-ups between processes: a datagram on the abstract socket of the data directory."""

from connector.store.wakeup import Waker, notify


def test_a_notice_wakes_the_waiting_process_and_nothing_else(tmp_path):
    worker = Waker(tmp_path, "worker")
    deliver = Waker(tmp_path, "deliver")
    other_site = Waker(tmp_path / "elsewhere", "worker")
    try:
        notify("worker", tmp_path)
        notify("worker", tmp_path)
        assert worker.wait(5) is True            # both notices swallowed at once
        assert worker.wait(0.05) is False
        assert deliver.wait(0.05) is False        # another role, another socket
        assert other_site.wait(0.05) is False     # another data directory
        assert Waker(tmp_path, "worker").sock is None   # a second worker polls instead
    finally:
        for waker in (worker, deliver, other_site):
            waker.close()


def test_notify_without_a_listener_is_harmless(tmp_path):
    notify("worker", tmp_path / "nobody")      # must not raise or block
    late = Waker(tmp_path / "nobody", "worker")
    try:
        assert late.wait(0.05) is False            # a datagram nobody received is not kept for later
    finally:
        late.close()

from lectern.speech.engines.worker import RequestQueue


def test_a_stream_waiting_for_its_commit_goes_first_keeping_its_own_order():
    queue = RequestQueue()
    arrivals = [
        (1, "feed", 10, None),
        (2, "feed", 20, None),
        (3, "feed", 10, None),
        (4, "feed", 30, None),
        (5, "finish", 20, None),
        (6, "feed", 20, None),
        (7, "finish", 30, None),
    ]
    for message in arrivals:
        queue.add(message)
    order = []
    while queue:
        order.append(queue.next()[0])
    # stream 20's feed and commit first, then stream 30's, then the rest in arrival order
    assert order == [2, 5, 4, 7, 1, 3, 6]


def test_without_commits_requests_keep_arrival_order():
    queue = RequestQueue()
    for i in range(5):
        queue.add((i, "feed", i % 2, None))
    assert [queue.next()[0] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert not queue


def test_a_stream_with_more_audio_queued_gets_no_partial_yet():
    queue = RequestQueue()
    queue.add((1, "feed", 10, None))
    queue.add((2, "feed", 10, None))
    queue.add((3, "feed", 20, None))
    assert queue.next()[0] == 1
    assert queue.has_feed(10) and queue.has_feed(20)  # stream 10's next audio is waiting
    assert queue.next()[0] == 2
    assert not queue.has_feed(10) and queue.has_feed(20)


def test_a_worker_is_behind_once_its_oldest_request_has_waited(monkeypatch):
    import lectern.speech.engines.worker as worker

    now = [100.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: now[0])
    queue = RequestQueue()
    assert not queue.behind()
    queue.add((1, "feed", 10, None))
    now[0] += worker.BEHIND_SECONDS
    assert not queue.behind()
    now[0] += 0.01
    assert queue.behind()
    queue.next()
    assert not queue.behind()

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

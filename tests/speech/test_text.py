from lectern.speech.text import clean_token, remove_disfluencies


def test_noise_and_silence_markers_are_not_words():
    assert [clean_token(t) for t in ["<s>", "<sil>", "[NOISE]", "++UH++", "hello", "read(2)"]] == [
        None, None, None, None, "hello", "read",
    ]


def test_no_verbatim_drops_fillers_and_false_starts():
    words = "um so I I think uh we should hmm go".split()
    assert remove_disfluencies(words, str) == "so I think we should go".split()

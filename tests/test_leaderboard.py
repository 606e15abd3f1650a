"""The leaderboard CSV: readers never write, the writer repairs what a killed writer left, and a
row with columns beyond the known ones widens the header instead of failing."""
import csv

from flowbench.leaderboard import COLUMNS, Leaderboard


def parsed(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, list(reader)


def test_a_reader_leaves_a_partial_last_line_alone_and_skips_it(tmp_path):
    board = Leaderboard(tmp_path)
    board.append({"row_key": "a", "family": "mdlm"})
    with board.csv.open("a") as f:  # a writer half-way through its row
        f.write("smoke,kl_flow,tra")
    before = board.csv.read_bytes()
    assert board.keys() == {"a"} and [r["family"] for r in board.rows()] == ["mdlm"]
    assert board.csv.read_bytes() == before


def test_the_next_append_cuts_the_line_a_killed_writer_left(tmp_path):
    board = Leaderboard(tmp_path)
    board.append({"row_key": "a", "family": "mdlm"})
    with board.csv.open("a") as f:
        f.write("smoke,kl_flow,tra")  # killed here
    board.append({"row_key": "b", "family": "dfm"})
    header, rows = parsed(board.csv)
    assert header == COLUMNS and all(len(r) == len(header) for r in rows)
    assert [dict(zip(header, r))["row_key"] for r in rows] == ["a", "b"]


def test_a_killed_first_write_leaves_a_partial_header_that_the_next_append_replaces(tmp_path):
    board = Leaderboard(tmp_path)
    board.csv.parent.mkdir(parents=True, exist_ok=True)
    board.csv.write_text("suite,fam")
    assert board.keys() == set()
    board.append({"row_key": "a"})
    header, rows = parsed(board.csv)
    assert header == COLUMNS and len(rows) == 1


def test_a_row_with_a_new_column_widens_the_header_after_the_known_ones(tmp_path):
    board = Leaderboard(tmp_path)
    board.append({"row_key": "a", "gen_ppl": 3.0})
    board.append({"row_key": "b", "gen_ppl": 4.0, "distinct_ids": 0.5})
    board.append({"row_key": "c", "gen_ppl": 5.0})
    header, rows = parsed(board.csv)
    assert header == COLUMNS + ["distinct_ids"]
    assert [(r["row_key"], r["gen_ppl"], r["distinct_ids"]) for r in board.rows()] == [
        ("a", "3.0", ""), ("b", "4.0", "0.5"), ("c", "5.0", "")]


def test_a_board_of_its_own_columns_keeps_their_order(tmp_path):
    columns = ["method", "reward_mean", "row_key"]
    board = Leaderboard(tmp_path, columns=columns)
    board.append({"row_key": "a", "method": "base", "reward_mean": -1.5})
    assert parsed(board.csv) == (columns, [["base", "-1.5", "a"]])

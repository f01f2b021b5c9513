"""Regenerate spklite/models.yml from the reference table model_to_platform.tsv.

Usage: python tools/make_models.py ../shared/data/model_to_platform.tsv > spklite/models.yml
"""

import csv
import sys

from spklite.synology import family_of


def main(path: str) -> None:
    print("# NAS models and their platforms (from the Synology reference tables).")
    print("# model: as sold; platform: the `arch` the NAS sends; family: its Synology family.")
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            platforms = row["platform"].split("|")
            family = family_of(platforms[0]) or "-"
            print(f"- {{model: \"{row['model']}\", platform: {platforms[0]}, family: \"{family}\"", end="")
            if len(platforms) > 1:
                print(f", platforms: [{', '.join(platforms)}]", end="")
            print("}")


if __name__ == "__main__":
    main(sys.argv[1])

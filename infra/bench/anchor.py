"""The Python anchor the throughput part measures `mailroom run` against.

The usual Python way to do the same job: the standard library's `email` package parses each
message, and a scikit-learn TF-IDF (word 1-2-grams) LinearSVC trained on ham/ and spam/
labels it. Parse plus predict, as a whole process, over the files and folders it is given.

    python anchor.py train MODEL DIR          # DIR/ham, DIR/spam
    python anchor.py predict MODEL PATH...    # one "label file" line per message

It runs in the virtual environment the bench makes (scikit-learn from PyPI).
"""

import email
import email.policy
import os
import pickle
import sys


def files_of(paths):
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                f = os.path.join(p, name)
                if os.path.isfile(f):
                    yield f
        else:
            yield p


def text_of(raw):
    """Subject and the decoded text/plain and text/html parts, as the model reads them."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [str(msg.get("subject", ""))]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(part.get_content())
            except (LookupError, ValueError, AssertionError):
                payload = part.get_payload(decode=True) or b""
                parts.append(payload.decode("latin-1"))
    return "\n".join(parts)


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    # The SpamAssassin corpus starts most messages with an mbox "From " line.
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[-1]
    return raw


def train(model_path, folder):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    texts, labels = [], []
    for label in ("ham", "spam"):
        for f in files_of([os.path.join(folder, label)]):
            texts.append(text_of(read(f)))
            labels.append(label)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2), LinearSVC())
    model.fit(texts, labels)
    with open(model_path, "wb") as f:
        pickle.dump(model, f)
    print(f"trained on {len(texts)} messages", file=sys.stderr)


# Messages per predict call: scikit-learn's per-call overhead would otherwise dominate, so
# the anchor gets the batching a careful Python user would give it.
BATCH = 128


def predict(model_path, paths):
    with open(model_path, "rb") as f:
        model = pickle.load(f)
    out = sys.stdout
    batch = []

    def flush():
        for label, name in zip(model.predict([t for t, _ in batch]), (n for _, n in batch)):
            out.write(f"{label} {name}\n")
        batch.clear()

    for f in files_of(paths):
        batch.append((text_of(read(f)), f))
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "predict":
        predict(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)

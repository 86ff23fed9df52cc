#!/usr/bin/env bash
# SST-2 with the encoder pretrained as two word language models (Dai & Le 2015), still
# without pretrained vectors: everything is learned here, from the shared data only.
#
#   1. A corpus of unlabelled text: the SST-2 training sentences (labels cut, lowercased;
#      never the dev sentences), then the Penn Treebank training text: 1.07 M words.
#   2. A forward LSTM language model on it (1 x 256, embeddings 256 tied to the output,
#      dropout 0.3, vocabulary 12,000, Adam 2e-3 with a cosine decay, 3 epochs), and a
#      backward one on the same text read backwards (each line's words and the lines in
#      reverse order). PTB's validation text, forwards and backwards, is their validation.
#   3. scripts/sst2.sh's classifier at the language models' width (embeddings 256, 256
#      units per direction), started from them: the forward model's embeddings and its
#      layer as the forward direction, the backward model's layer as the backward one.
#
#   scripts/sst2_pretrained.sh [more --section.field VALUE overrides for the classifier]
#
# The language models are trained once, into runs/sst2-lm/{fwd,bwd} (or SST2_LM_DIR); a
# later call resumes them: an interrupted one finishes, a finished one is reused as it is
# (delete fwd or bwd there to train one afresh). SST2_LM_ARGS adds
# overrides to both language models. Data: ../shared/data (override with RNNKIT_DATA);
# the classifier goes to runs/sst2-pretrained.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${RNNKIT_DATA:-../shared/data}"
for file in sst2/stsa.binary.train ptb/ptb.train.txt ptb/ptb.valid.txt; do
    if [[ ! -f "$DATA/$file" ]]; then
        echo "error: $DATA/$file not found; set RNNKIT_DATA" >&2
        exit 2
    fi
done
read -r -a RNNKIT_CMD <<< "${RNNKIT:-rnnkit}"
LM="${SST2_LM_DIR:-runs/sst2-lm}"
read -r -a LM_ARGS <<< "${SST2_LM_ARGS:-}"
mkdir -p "$LM"

backwards() {  # each line's words in reverse order, and the lines in reverse order
    awk '{ for (i = NF; i > 0; i--) printf "%s%s", $i, (i > 1 ? " " : "\n") }' "$1" | tac
}
# Three SST sentences hold a no-break space, which the word tokenizer splits on and awk
# would not: it becomes a space.
cut -d' ' -f2- "$DATA/sst2/stsa.binary.train" | tr 'A-Z' 'a-z' | sed 's/\xc2\xa0/ /g' \
    > "$LM/corpus.txt"
cat "$DATA/ptb/ptb.train.txt" >> "$LM/corpus.txt"
backwards "$LM/corpus.txt" > "$LM/corpus.reversed.txt"
backwards "$DATA/ptb/ptb.valid.txt" > "$LM/ptb.valid.reversed.txt"

language_model() {  # name, training text, validation text
    if [[ -d "$LM/$1/last" ]]; then
        # A finished run resumes to nothing; an interrupted one finishes where it stopped.
        echo "resuming the language model in $LM/$1"
        "${RNNKIT_CMD[@]}" train lm --resume "$LM/$1" --trainer.progress false
        return
    fi
    "${RNNKIT_CMD[@]}" train lm --data.text "$2" --data.valid_text "$3" \
        --data.tokenizer word --data.vocab_size 12000 --data.batch_size 32 --data.bptt 35 \
        --model.cell lstm --model.num_layers 1 --model.hidden_size 256 \
        --model.embedding_size 256 --model.tie_weights true --model.dropout 0.3 \
        --optim.lr 2e-3 --optim.schedule cosine --trainer.epochs 3 \
        --trainer.max_minutes none --trainer.progress false --trainer.out "$LM/$1" \
        "${LM_ARGS[@]}"
}
language_model fwd "$LM/corpus.txt" "$DATA/ptb/ptb.valid.txt"
language_model bwd "$LM/corpus.reversed.txt" "$LM/ptb.valid.reversed.txt"

exec scripts/sst2.sh --model.embedding_size 256 --model.hidden_size 256 \
    --data.pretrained_lm "$LM/fwd" --data.pretrained_lm_reverse "$LM/bwd" \
    --trainer.out runs/sst2-pretrained "$@"

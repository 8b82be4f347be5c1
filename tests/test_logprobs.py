"""Chunked log-probs equal the plain log_softmax + gather, in value and gradient."""

import torch

from mhpo.train.logprobs import plain_token_logprobs, token_logprobs

F64 = torch.float64


def inputs(rows=13, hidden=6, vocab=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=gen, dtype=F64, requires_grad=True)
    t = torch.randint(0, vocab, (rows,), generator=gen)
    return h, w, t


def test_values_gradients_and_entropy_match_plain_path():
    h, w, t = inputs()
    upstream = torch.randn(13, dtype=F64, generator=torch.Generator().manual_seed(1))
    for chunk in (1, 4, 13, 100):
        logp, entropy = token_logprobs(h, w, t, chunk=chunk, with_entropy=True)
        ref = plain_token_logprobs(h, w, t)
        torch.testing.assert_close(logp, ref, rtol=1e-13, atol=1e-13)
        g = torch.autograd.grad((logp * upstream).sum(), (h, w))
        g_ref = torch.autograd.grad((ref * upstream).sum(), (h, w))
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
        log_softmax = torch.log_softmax(h @ w.T, -1)
        expected_entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        torch.testing.assert_close(entropy, expected_entropy, rtol=1e-12, atol=1e-13)
        assert not entropy.requires_grad


def test_gradcheck_and_batched_shapes():
    h, w, t = inputs(rows=5, hidden=3, vocab=4)
    assert torch.autograd.gradcheck(lambda a, b: token_logprobs(a, b, t, chunk=2)[0], (h, w))
    h3 = h.detach().view(5, 1, 3).expand(5, 2, 3)
    logp, entropy = token_logprobs(h3, w.detach(), t.view(5, 1).expand(5, 2))
    assert logp.shape == (5, 2) and entropy is None


def test_float32_inputs_give_float32_logprobs():
    h, w, t = inputs()
    logp, _ = token_logprobs(h.detach().float(), w.detach().float(), t)
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.double(), plain_token_logprobs(h, w, t).detach(), rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_run_the_matmuls_in_bfloat16_and_the_log_softmax_in_float32():
    """The output layer in bfloat16: logits of bfloat16 operands, log-softmax in float32. The
    values are exactly the float64 log-softmax of those logits rounded to float32's precision;
    the gradients agree with float64 to the rounding of bfloat16 matmuls (about 2^-8)."""
    h, w, t = inputs(rows=40, hidden=16, vocab=50)
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    upstream = torch.randn(40, dtype=F64, generator=torch.Generator().manual_seed(1))
    logp, entropy = token_logprobs(hb, wb, t, chunk=7, with_entropy=True)
    assert logp.dtype == entropy.dtype == torch.float32
    logits = (hb @ wb.T).double()  # the bfloat16 product as the forward computes it
    torch.testing.assert_close(logp.double(), torch.log_softmax(logits, -1).gather(-1, t[:, None]).squeeze(-1),
                               rtol=0, atol=1e-5)  # fmt: skip
    grads = torch.autograd.grad((logp.double() * upstream).sum(), (hb, wb))
    hd, wd = hb.detach().double().requires_grad_(), wb.detach().double().requires_grad_()
    exact = torch.autograd.grad((plain_token_logprobs(hd, wd, t) * upstream).sum(), (hd, wd))
    for got, want in zip(grads, exact):
        assert got.dtype == torch.bfloat16
        scale = want.abs().max()
        assert (got.double() - want).abs().max() <= 2**-7 * scale

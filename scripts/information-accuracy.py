#!/usr/bin/env python3
"""How far the engine's 16-node Gauss-Hermite rule and its closed-form screen are from the exact
information of a pair, and the rule from the exact P(a) = E sigma(f), as the belief's variance
grows (BENCHMARKS.md, issue 24, "Questions no worse").

For f ~ N(m, s2) and a lapse-free logistic answer, I = h(E sigma(f)) - E h(sigma(f)) in bits.
The reference is the trapezoidal rule with a step of at most 0.05 (and s/20) over
m +- (10s + 40): the integrands are analytic and decay fast, so it is exact to far below the
printed digits. Prints, for each s2, the largest error over m in [0, 8].
Usage: python3 scripts/information-accuracy.py   (standard library only)
"""
import math


def sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def entropy_bits(p):
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def gauss_hermite(n):
    """Nodes z and weights w with sum w g(z) ~ E g(Z), Z ~ N(0, 1) (Newton on the Hermite
    polynomials, as Numerical Recipes' gauher)."""
    nodes, weights = [0.0] * n, [0.0] * n
    z = 0.0
    for i in range((n + 1) // 2):
        if i == 0:
            z = math.sqrt(2 * n + 1) - 1.85575 * (2 * n + 1) ** (-0.16667)
        elif i == 1:
            z -= 1.14 * n**0.426 / z
        elif i == 2:
            z = 1.86 * z - 0.86 * nodes[0]
        elif i == 3:
            z = 1.91 * z - 0.91 * nodes[1]
        else:
            z = 2.0 * z - nodes[i - 2]
        for _ in range(100):
            p1, p2 = math.pi**-0.25, 0.0
            for j in range(1, n + 1):
                p3, p2 = p2, p1
                p1 = z * math.sqrt(2.0 / j) * p2 - math.sqrt((j - 1) / j) * p3
            pp = math.sqrt(2.0 * n) * p2
            z1, z = z, z - p1 / pp
            if abs(z - z1) < 1e-15:
                break
        nodes[i], nodes[n - 1 - i] = z, -z
        weights[i] = weights[n - 1 - i] = 2.0 / (pp * pp)
    # Physicists' rule (weight e^{-x^2}) to the standard normal's.
    return [x * math.sqrt(2.0) for x in nodes], [w / math.sqrt(math.pi) for w in weights]


NODES, WEIGHTS = gauss_hermite(16)


def by_rule(m, s2):
    s = math.sqrt(s2)
    p = [sigmoid(m + s * z) for z in NODES]
    mean = sum(w * q for w, q in zip(WEIGHTS, p))
    return entropy_bits(mean) - sum(w * entropy_bits(q) for w, q in zip(WEIGHTS, p)), mean


def exact(m, s2):
    s = math.sqrt(s2)
    lo, hi = m - 10 * s - 40, m + 10 * s + 40
    n = int(math.ceil((hi - lo) / min(0.05, s / 20)))
    step = (hi - lo) / n
    mean = conditional = 0.0
    for i in range(n + 1):
        f = lo + i * step
        w = step * math.exp(-((f - m) ** 2) / (2 * s2)) / math.sqrt(2 * math.pi * s2)
        if i in (0, n):
            w *= 0.5
        p = sigmoid(f)
        mean += w * p
        conditional += w * entropy_bits(p)
    return entropy_bits(mean) - conditional, mean


def closed_form(m, s2):
    c2 = 4.0 * math.log(2.0)
    predictive = sigmoid(m / math.sqrt(1.0 + math.pi * s2 / 8.0))
    expected = math.sqrt(c2 / (s2 + c2)) * math.exp(-m * m / (2.0 * (s2 + c2)))
    return max(entropy_bits(predictive) - expected, 0.0)


def main():
    print("| s² | 16-node information − exact (bits) | closed form − exact (bits) | 16-node E σ − exact |")
    print("|---|---|---|---|")
    for s2 in (1.0, 4.0, 9.0, 16.0, 25.0, 49.0, 100.0, 400.0):
        worst = [0.0, 0.0, 0.0]
        for k in range(33):
            m = k * 0.25
            rule, rule_mean = by_rule(m, s2)
            true, true_mean = exact(m, s2)
            for i, gap in enumerate((rule - true, closed_form(m, s2) - true, rule_mean - true_mean)):
                worst[i] = max(worst[i], abs(gap))
        print(f"| {s2:g} | {worst[0]:.2g} | {worst[1]:.3f} | {worst[2]:.2g} |")


if __name__ == "__main__":
    main()

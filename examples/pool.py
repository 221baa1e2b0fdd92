"""The tutorial's Pool program, with pmap: the same results as map, lambdas included."""

from parmap import pmap


def square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    print(pmap(square, range(10)))
    print(pmap(lambda x: x + 1, range(10), backend="process"))

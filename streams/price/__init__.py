from tokenbrake.streams.price.pricebook import PriceBook, PricedCall

__all__ = ["PriceBook", "PricedCall"]

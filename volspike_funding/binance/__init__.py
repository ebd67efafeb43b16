"""binance"""
